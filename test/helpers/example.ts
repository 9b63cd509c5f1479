import type { FastifyInstance } from 'fastify'
import { buildExample, type ExampleAppOptions } from '../../example/app.js'
import { freePort } from './login.js'

export interface RunningExample {
  app: FastifyInstance
  issuer: string
  mcp: URL
}

/**
 * The example, configured from the environment as in production, on a real loopback socket.
 * `options` adds plugin options (`oauth`) or swaps the MCP endpoint (`mcp`, e.g. the SDK 1.x one).
 */
export async function startExample (t: { teardown (fn: () => unknown): void }, options: Omit<ExampleAppOptions, 'env'> = {}): Promise<RunningExample> {
  const port = await freePort()
  const issuer = `http://127.0.0.1:${port}`
  const app = await buildExample({ PORT: String(port), HOST: '127.0.0.1', MCP_OAUTH_ISSUER: issuer }, undefined, options)
  t.teardown(() => app.close())
  await app.listen({ port, host: '127.0.0.1' })
  return { app, issuer, mcp: new URL(`${issuer}/mcp`) }
}
