import Fastify, { type FastifyInstance, type FastifyPluginAsync, type FastifyServerOptions } from 'fastify'
import fp from 'fastify-plugin'
import { mcpOAuth } from '../lib/index.js'
import type { Provider } from '../lib/providers/types.js'
import { mcpRoutes } from './mcp.js'

/**
 * A runnable MCP server protected by fastify-mcp-oauth.
 *
 *   npm run build && fastify start --options dist/example/app.js
 *
 * Environment: PORT (3000), HOST (127.0.0.1), MCP_OAUTH_ISSUER (http://HOST:PORT), LOG_LEVEL (info).
 * Fastify CLI itself listens on PORT; give it the address with `--address` or FASTIFY_ADDRESS.
 */

export type ExampleEnv = Record<string, string | undefined>

export interface ExampleConfig {
  port: number
  host: string
  issuer: string
  /** The MCP endpoint, which is also the resource indicator of its tokens. */
  resource: string
  scopes: string[]
}

export function configFromEnv (env: ExampleEnv = process.env): ExampleConfig {
  const rawPort = env.PORT ?? '3000'
  const port = Number(rawPort)
  if (!/^\d+$/.test(rawPort) || port > 65535) throw new Error(`PORT must be a port number, not "${rawPort}"`)
  const host = env.HOST ?? '127.0.0.1'
  // A wildcard bind address is not somewhere a browser can go: advertise the loopback address instead.
  const issuer = env.MCP_OAUTH_ISSUER ?? `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${port}`
  return { port, host, issuer, resource: `${issuer}/mcp`, scopes: ['mcp:tools'] }
}

/**
 * The upstream identity provider that logs users in, chosen from the environment: Google when
 * GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET are set, any OpenID Connect provider when OIDC_ISSUER,
 * OIDC_CLIENT_ID and OIDC_CLIENT_SECRET are set, and otherwise an embedded development IdP.
 * It returns undefined while no provider is wired in, so the server can still validate tokens
 * but nobody can log in through it.
 */
export function upstreamFromEnv (_env: ExampleEnv): Provider | undefined {
  return undefined
}

export interface ExampleAppOptions {
  /** Where to read the configuration from; default process.env. */
  env?: ExampleEnv
}

/** The application plugin: the OAuth plugin, the MCP endpoint and a help page at `/`. */
const exampleApp: FastifyPluginAsync<ExampleAppOptions> = async (fastify, opts) => {
  const env = opts.env ?? process.env
  const config = configFromEnv(env)
  const upstream = upstreamFromEnv(env)

  await fastify.register(mcpOAuth, {
    issuer: config.issuer,
    resources: [config.resource],
    scopes: config.scopes
  })
  await fastify.register(mcpRoutes, { scopes: config.scopes })

  const resolved = fastify.mcpOAuth.config
  const help = {
    name: 'fastify-mcp-oauth example',
    issuer: resolved.issuer,
    mcp: config.resource,
    scopes: resolved.scopes,
    login: upstream?.name ?? null,
    metadata: {
      authorizationServer: resolved.origin + resolved.asMetadataPaths[0],
      protectedResource: resolved.resources.map(r => r.metadataUrl)
    }
  }
  fastify.get('/', async () => help)
}

/** Not encapsulated, so `fastify.mcpOAuth` (grants, validator, storage) is reachable from the root instance. */
export const app = fp(exampleApp, { name: 'fastify-mcp-oauth-example', fastify: '5.x' })
export default app

/** Server options that Fastify CLI merges in when started with `--options`. */
export const options: FastifyServerOptions = {
  logger: { level: process.env.LOG_LEVEL ?? 'info' }
}

/** The configured example, not listening: for tests and for embedding without Fastify CLI. */
export async function buildExample (env: ExampleEnv = process.env, serverOptions: FastifyServerOptions = { logger: false }): Promise<FastifyInstance> {
  const instance = Fastify(serverOptions)
  await instance.register(app, { env })
  await instance.ready()
  return instance
}
