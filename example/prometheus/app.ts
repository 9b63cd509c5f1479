import Fastify, { type FastifyInstance, type FastifyPluginAsync, type FastifyServerOptions } from 'fastify'
import fp from 'fastify-plugin'
import { app as example, type ExampleEnv } from '../app.js'
import { serverDefaults } from '../timeouts.js'

/**
 * The example MCP server with Prometheus metrics on (see README.md beside this file).
 *
 *   npm run build
 *   METRICS_TOKEN=... node node_modules/fastify-cli/cli.js start --options -a 127.0.0.1 -p 3000 dist/example/prometheus/app.js
 *
 * Environment: everything ../app.ts reads (PORT, HOST, MCP_OAUTH_ISSUER, GOOGLE_*, OIDC_*, REDIS_URL, ...),
 * plus METRICS_TOKEN (the bearer token Prometheus sends; without it /metrics is open and a warning is
 * logged) and METRICS_PATH (default /metrics).
 */

export interface PrometheusExampleOptions {
  env?: ExampleEnv
}

const prometheusExample: FastifyPluginAsync<PrometheusExampleOptions> = async (fastify, opts) => {
  const env = opts.env ?? process.env
  const token = env.METRICS_TOKEN
  await fastify.register(example, {
    env,
    oauth: {
      metrics: {
        enabled: true,
        ...(env.METRICS_PATH !== undefined && env.METRICS_PATH !== '' ? { path: env.METRICS_PATH } : {}),
        ...(token !== undefined && token !== '' ? { token } : {})
      }
    }
  })
}

export const app = fp(prometheusExample, { name: 'fastify-mcp-oauth-prometheus-example', fastify: '5.x' })
export default app

/** Server options that Fastify CLI merges in when started with `--options`. */
export const options: FastifyServerOptions = {
  ...serverDefaults,
  logger: { level: process.env.LOG_LEVEL ?? 'info' }
}

/** The configured example, not listening: for tests. */
export async function buildPrometheusExample (env: ExampleEnv = process.env, serverOptions: FastifyServerOptions = { logger: false }): Promise<FastifyInstance> {
  const instance = Fastify(serverOptions)
  await instance.register(app, { env })
  await instance.ready()
  return instance
}
