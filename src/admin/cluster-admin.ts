/**
 * The cluster primary's admin listener: an `AdminServer` whose numbers a `ClusterMonitor` gathers from the
 * workers. The composition root (command.ts) passes `createClusterAdmin` to the `Primary`, which calls it once
 * with its view; the primary itself knows nothing of the admin UI.
 */
import type { Logger } from 'pino';
import { Counter, Registry } from 'prom-client';
import type { PrimaryAdmin, PrimaryView } from '../cluster/primary.js';
import type { Config } from '../config/schema.js';
import { packageVersion } from '../util/version.js';
import { ClusterMonitor } from './cluster.js';
import { AdminServer, logAdminListening } from './server.js';

export interface ClusterAdminOptions {
  config: Config;
  logger: Logger;
}

/** Builds (does not start) the admin listener of a cluster primary; runs when the primary is built. */
export function createClusterAdmin(view: PrimaryView, options: ClusterAdminOptions): PrimaryAdmin {
  const { config, logger } = options;
  const monitor = new ClusterMonitor({
    config,
    logger,
    version: packageVersion(),
    startedAt: Date.now(),
    workers: () => view.workers(),
    restarts: () => view.restarts(),
    draining: () => view.draining(),
    currentConfig: () => view.currentConfig(),
  });
  // The primary validates and counts reloads; its workers only switch.
  const reloads = new Registry();
  new Counter({
    name: 'tollgate_config_reloads_total',
    help: 'Config reloads (SIGHUP, POST /api/reload) by result: ok, or error (the old config kept serving).',
    labelNames: ['result'],
    registers: [reloads],
    collect() {
      this.reset();
      const counts = view.reloads();
      this.inc({ result: 'ok' }, counts.ok);
      this.inc({ result: 'error' }, counts.error);
    },
  });
  const server = new AdminServer({
    config: config.admin,
    logger,
    status: async () => ({ ...(await monitor.status()), config: view.config() }),
    scrape: async () => `${await monitor.scrape()}${await reloads.metrics()}`,
    scrapeContentType: monitor.contentType,
    reload: () => view.reload(),
  });
  return {
    async listen() {
      const at = await server.listen();
      logAdminListening(logger, at);
      return at;
    },
    reply: (pid, message) => monitor.reply(pid, message),
    exited: (pid) => monitor.exited(pid),
    close() {
      monitor.close();
      return server.close();
    },
  };
}
