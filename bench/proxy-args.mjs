// Command line of the Node proxies the benchmark starts (bare forwarder and the bench/peers scripts):
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
