import Fastify, { type FastifyInstance } from 'fastify'
import { mcpOAuth, type McpOAuthOptions } from '../../lib/index.js'
import { TestClock } from './clock.js'

export const ISSUER = 'https://auth.example.com'
export const RESOURCE = 'https://auth.example.com/mcp'

export interface TestApp {
  app: FastifyInstance
  clock: TestClock
}

/**
 * An app with the plugin and one guarded MCP-like route (`POST /mcp`, scope mcp:tools) that echoes
 * request.mcpAuth, plus an unguarded `/open`. Closed by the test's teardown.
 */
export async function buildApp (t: { teardown (fn: () => unknown): void }, opts: Partial<McpOAuthOptions> = {}): Promise<TestApp> {
  const clock = new TestClock()
  const app = Fastify({ logger: false })
  await app.register(mcpOAuth, {
    issuer: ISSUER,
    resources: [RESOURCE],
    scopes: ['mcp:tools', 'mcp:admin'],
    defaultScopes: ['mcp:tools'],
    now: clock.now,
    ...opts
  })
  app.post('/mcp', { onRequest: app.mcpOAuth.authenticate({ scopes: ['mcp:tools'] }) }, async (request) => ({ auth: request.mcpAuth }))
  app.post('/mcp/admin', { onRequest: app.mcpOAuth.authenticate({ scopes: ['mcp:tools', 'mcp:admin'] }) }, async (request) => ({ auth: request.mcpAuth }))
  app.get('/open', async (request) => ({ auth: request.mcpAuth }))
  await app.ready()
  t.teardown(() => app.close())
  return { app, clock }
}
