import Fastify, { type FastifyInstance, type FastifyPluginAsync, type FastifyServerOptions } from 'fastify'
import fp from 'fastify-plugin'
import { mcpOAuth } from '../../lib/index.js'
import { configFromEnv, upstreamFromEnv, type ExampleEnv } from '../app.js'
import { mcpRoutes } from '../mcp.js'

/**
 * The example MCP server with Prometheus metrics on (see README.md beside this file).
 *
 *   npm run build
 *   METRICS_TOKEN=... node node_modules/fastify-cli/cli.js start --options -a 127.0.0.1 -p 3000 dist/example/prometheus/app.js
 *
 * Environment: everything ../app.ts reads (PORT, HOST, MCP_OAUTH_ISSUER, GOOGLE_*, OIDC_*, ...), plus
 * METRICS_TOKEN (the bearer token Prometheus sends; without it /metrics is open and a warning is
 * logged) and METRICS_PATH (default /metrics).
 */

export interface PrometheusExampleOptions {
  env?: ExampleEnv
}

const prometheusExample: FastifyPluginAsync<PrometheusExampleOptions> = async (fastify, opts) => {
  const env = opts.env ?? process.env
  const config = configFromEnv(env)
  const upstream = await upstreamFromEnv(env, config.issuer)
  fastify.addHook('onClose', () => upstream.close())
  if (upstream.development) {
    fastify.log.warn('*** DEVELOPMENT MODE: an embedded identity provider accepts ANY user name; public registration is on. ***')
  }
  const token = env.METRICS_TOKEN
  await fastify.register(mcpOAuth, {
    issuer: config.issuer,
    resources: [config.resource],
    scopes: config.scopes,
    provider: upstream.provider,
    registration: upstream.development || env.MCP_OAUTH_PUBLIC_REGISTRATION === 'true'
      ? { mode: 'public' }
      : env.MCP_OAUTH_REGISTRATION_TOKEN !== undefined && env.MCP_OAUTH_REGISTRATION_TOKEN !== ''
        ? { mode: 'token', token: env.MCP_OAUTH_REGISTRATION_TOKEN }
        : { mode: 'off' },
    ...(env.MCP_OAUTH_COOKIE_SECRET !== undefined && env.MCP_OAUTH_COOKIE_SECRET !== '' ? { cookieSecret: env.MCP_OAUTH_COOKIE_SECRET } : {}),
    ...(env.MCP_OAUTH_ENCRYPTION_KEY !== undefined && env.MCP_OAUTH_ENCRYPTION_KEY !== ''
      ? { encryption: { keys: [{ id: 'k1', key: env.MCP_OAUTH_ENCRYPTION_KEY }] } }
      : {}),
    metrics: {
      enabled: true,
      ...(env.METRICS_PATH !== undefined && env.METRICS_PATH !== '' ? { path: env.METRICS_PATH } : {}),
      ...(token !== undefined && token !== '' ? { token } : {})
    }
  })
  await fastify.register(mcpRoutes, { scopes: config.scopes })
  fastify.get('/', async () => ({ name: 'fastify-mcp-oauth Prometheus example', issuer: config.issuer, mcp: config.resource }))
}

export const app = fp(prometheusExample, { name: 'fastify-mcp-oauth-prometheus-example', fastify: '5.x' })
export default app

/** Server options that Fastify CLI merges in when started with `--options`. */
export const options: FastifyServerOptions = {
  logger: { level: process.env.LOG_LEVEL ?? 'info' }
}

/** The configured example, not listening: for tests. */
export async function buildPrometheusExample (env: ExampleEnv = process.env, serverOptions: FastifyServerOptions = { logger: false }): Promise<FastifyInstance> {
  const instance = Fastify(serverOptions)
  await instance.register(app, { env })
  await instance.ready()
  return instance
}
