import type { FastifyCorsOptions } from '@fastify/cors'
import type { FastifyRequest } from 'fastify'
import type { ResolvedConfig } from '../options/index.js'

/**
 * CORS for what browser-based MCP clients call: metadata, token, registration, revocation,
 * introspection and the protected resources. Origins are listed exactly (or "*" with a warning);
 * every other route of the application is left alone.
 */
export function corsOptions (config: ResolvedConfig): FastifyCorsOptions {
  const cors = config.cors as NonNullable<ResolvedConfig['cors']>
  const oauth = `${config.basePath}/oauth/`
  const browserEndpoints = new Set(['token', 'register', 'revoke', 'introspect'].map(e => oauth + e))
  const resourcePaths = config.resources.map(r => new URL(r.resource).pathname)
  const covered = (path: string) =>
    path.startsWith('/.well-known/oauth-') ||
    browserEndpoints.has(path) || path.startsWith(`${oauth}register/`) ||
    resourcePaths.some(p => path === p || path.startsWith(p.endsWith('/') ? p : p + '/'))
  const on: FastifyCorsOptions = {
    origin: cors.origins === '*' ? '*' : cors.origins,
    credentials: cors.credentials,
    methods: ['GET', 'POST', 'PUT', 'DELETE', 'OPTIONS'],
    allowedHeaders: ['authorization', 'content-type', 'mcp-protocol-version', 'mcp-session-id', 'last-event-id'],
    exposedHeaders: ['www-authenticate', 'mcp-session-id', 'retry-after', 'ratelimit-limit', 'ratelimit-remaining', 'ratelimit-reset'],
    maxAge: 600,
    // An OPTIONS without Origin or Access-Control-Request-Method is not a preflight, but not an
    // error either: it gets the same 204 (without Access-Control-Allow-Origin when there is no
    // listed Origin), not the plugin's plain-text 400.
    strictPreflight: false
  }
  return {
    delegator: (request: FastifyRequest, callback: (err: Error | null, options: FastifyCorsOptions) => void) => {
      const path = request.url.split('?')[0] ?? ''
      callback(null, covered(path) ? on : { origin: false })
    }
  } as FastifyCorsOptions
}
