import type { ServerOptions } from 'node:http'

/**
 * Server timeouts against clients that open a connection and never finish their request (slow
 * loris): Fastify sets none by default, and even turns off Node's own five-minute request timeout.
 * Pass them to Fastify() (or export them in fastify-cli's `options`).
 */
export const serverTimeouts = {
  /** The whole request, headers and body, within 10 s: OAuth and MCP requests are a few kilobytes. */
  requestTimeout: 10_000,
  /** A connection on which nothing moves for 30 s is closed (a stalled upload, a client that stopped reading). */
  connectionTimeout: 30_000,
  /** An idle keep-alive connection is closed after 5 s (a server behind a proxy needs longer: see production). */
  keepAliveTimeout: 5_000,
  http: {
    /** The headers within the same 10 s (Node's default, 60 s, is set before Fastify lowers requestTimeout). */
    headersTimeout: 10_000,
    /** Node looks for expired requests every 30 s by default: a stalled client would keep its connection up to 40 s. */
    connectionsCheckingInterval: 1_000
  } satisfies ServerOptions
}

/**
 * `//oauth/token?...` routed, logged and answered as `/oauth/token?...` (a client joining an issuer
 * written with a trailing slash sends such paths). Without it, a doubled slash misses the plugin's
 * paths, and Fastify's root 404 logs the URL with its query string, credentials included.
 */
export function collapseSlashes (req: { url?: string }): string {
  const url = req.url ?? '/'
  const end = url.search(/[?#]/)
  return end < 0 ? url.replace(/\/{2,}/g, '/') : url.slice(0, end).replace(/\/{2,}/g, '/') + url.slice(end)
}

/** What the examples pass to Fastify(): the timeouts, and runs of slashes in the path collapsed. */
export const serverDefaults = {
  ...serverTimeouts,
  rewriteUrl: collapseSlashes
}
