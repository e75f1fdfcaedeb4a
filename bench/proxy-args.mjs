// Command line of the Node proxies the benchmark starts (the bare and net forwarders, the bench/peers scripts):
//   node SCRIPT PORT HOST:PORT[,HOST:PORT...]   (or the PORT and BACKENDS environment variables)
export function proxyArgs(script) {
  const port = Number(process.argv[2] ?? process.env.PORT);
  const backends = String(process.argv[3] ?? process.env.BACKENDS ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (!Number.isInteger(port) || port <= 0 || backends.length === 0) {
    console.error(`usage: ${script} PORT HOST:PORT[,HOST:PORT...]`);
    process.exit(2);
  }
  return { port, backends };
}

// On SIGINT or SIGTERM: stop listening, close the undici pools, exit (within a second whatever happens).
export function closeOnSignals(server, pools) {
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, () => {
      server.close();
      Promise.allSettled(pools.map((p) => p.destroy())).finally(() => process.exit(0));
      setTimeout(() => process.exit(0), 1000).unref();
    });
  }
}
