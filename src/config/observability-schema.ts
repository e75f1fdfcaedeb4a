/**
 * Schema of the monitoring keys (`admin`, `metrics`, `tracing`), kept apart from schema.ts so the rest of
 * the config can change without touching them. Types come from the schema, as everywhere else.
 */
import { isIP } from 'node:net';
import { z } from 'zod';

const flag = (fallback: boolean) => z.boolean({ error: 'must be true or false' }).default(fallback);

export const adminSchema = z.strictObject({
  /** The admin listener: dashboard, /metrics, /api/status. On by default, on the loopback address only. */
  enabled: flag(true),
  /** An IP address; a public one exposes upstream addresses and traffic figures to whoever can reach it. */
  address: z
    .string({ error: 'must be an IP address' })
    .refine((a) => isIP(a) !== 0, 'must be an IP address such as "127.0.0.1" or "::1"')
    .default('127.0.0.1'),
  /** 0 picks a free port (tests). */
  port: z
    .number({ error: 'must be a port number (0-65535)' })
    .int('must be a whole number (0-65535)')
    .min(0, 'must be 0-65535')
    .max(65535, 'must be 0-65535')
    .default(9901),
  /**
   * When set, every admin request needs it: `Authorization: Bearer <token>`, or Basic with it as the
   * password (what a browser asks for). Required when `address` is not a loopback address.
   */
  token: z.string({ error: 'must be a string (use ${NAME} to read it from the environment)' }).min(16, 'must be at least 16 characters').optional(),
}).superRefine(function tokenOffLoopback(admin, ctx) {
  // An address that is not an IP address at all is reported by itself.
  if (admin.enabled && admin.token === undefined && isIP(admin.address) !== 0 && !isLoopback(admin.address)) {
    ctx.addIssue({
      code: 'custom',
      path: ['token'],
      message: `is required when address is not a loopback address (${admin.address}): without it, anyone who can reach the admin listener reads metrics and upstream addresses and can reload the config`,
    });
  }
});

/** 127.0.0.0/8, ::1, and IPv4-mapped ::ffff:127.x.y.z. */
export function isLoopback(address: string): boolean {
  if (address === '::1') return true;
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  return isIP(v4) === 4 && v4.startsWith('127.');
}

export const metricsSchema = z.strictObject({
  /** Per-request counters and latency (Prometheus and the dashboard); false leaves only scrape-time gauges. */
  enabled: flag(true),
});

export const tracingSchema = z.strictObject({
  /** W3C Trace Context: continue the client's traceparent with a new span id, or start a trace. */
  enabled: flag(true),
  /** trace-flags of traces Tollgate starts: sampled (01) by default, so parent-based samplers behind it record them. */
  sample_new_traces: flag(true),
  /** `Server-Timing: upstream;dur=<ms>` on proxied responses; independent of `enabled`. */
  server_timing: flag(true),
});

export type AdminConfig = z.infer<typeof adminSchema>;
export type MetricsConfig = z.infer<typeof metricsSchema>;
export type TracingConfig = z.infer<typeof tracingSchema>;
