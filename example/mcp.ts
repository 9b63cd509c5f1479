import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import { z } from 'zod'
import type { McpAuthInfo } from '../lib/index.js'

export interface McpRoutesOptions {
  /** Scopes every /mcp request must carry. Default ['mcp:tools']. */
  scopes?: string[]
}

/**
 * The part of the access token's identity the `whoami` tool reveals (the grant id stays internal;
 * `email` is present only when verified, so `emailVerified` adds nothing here).
 */
export type WhoAmI = Omit<McpAuthInfo, 'grantId' | 'emailVerified'>

const WhoAmIShape = {
  subjectType: z.enum(['user', 'client']),
  userId: z.string(),
  email: z.string().optional(),
  clientId: z.string(),
  scopes: z.array(z.string()),
  resource: z.string(),
  expiresAt: z.number().int()
}

function whoAmI (auth: McpAuthInfo): WhoAmI {
  const out: WhoAmI = {
    subjectType: auth.subjectType,
    userId: auth.userId,
    clientId: auth.clientId,
    scopes: auth.scopes,
    resource: auth.resource,
    expiresAt: auth.expiresAt
  }
  if (auth.email !== undefined) out.email = auth.email
  return out
}

/**
 * One MCP server for one request. The caller's identity reaches the tools through this closure,
 * so nothing about a user outlives the request or leaks into another one.
 */
export function createMcpServer (auth: McpAuthInfo): McpServer {
  const server = new McpServer({ name: 'fastify-mcp-oauth-example', version: '0.1.0' })

  server.registerTool('whoami', {
    title: 'Who am I',
    description: 'The identity behind the access token of this request: user, client, scopes, audience, expiry',
    outputSchema: WhoAmIShape,
    annotations: { readOnlyHint: true, openWorldHint: false }
  }, async () => {
    const identity = whoAmI(auth)
    return {
      content: [{ type: 'text', text: JSON.stringify(identity) }],
      structuredContent: { ...identity }
    }
  })

  server.registerTool('echo', {
    title: 'Echo',
    description: 'Returns the text it is given',
    inputSchema: { text: z.string().describe('The text to send back') },
    annotations: { readOnlyHint: true, openWorldHint: false }
  }, async ({ text }) => ({
    content: [{ type: 'text', text }]
  }))

  return server
}

function jsonRpcError (code: number, message: string) {
  return { jsonrpc: '2.0', error: { code, message }, id: null }
}

/**
 * The MCP endpoint at `/mcp`, over Streamable HTTP in stateless mode: every POST gets a fresh server
 * and transport, so any replica can answer any request. Every route is behind the OAuth guard.
 */
export const mcpRoutes: FastifyPluginAsync<McpRoutesOptions> = async (fastify, opts) => {
  const guard = fastify.mcpOAuth.authenticate({ scopes: opts.scopes ?? ['mcp:tools'] })

  fastify.post('/mcp', { onRequest: guard }, async (request: FastifyRequest, reply: FastifyReply) => {
    const auth = request.mcpAuth
    if (auth === null) throw new Error('the OAuth guard did not run on /mcp')

    const server = createMcpServer(auth)
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined })
    reply.hijack()
    reply.raw.on('close', () => {
      transport.close().catch(err => request.log.warn({ err }, 'closing the MCP transport failed'))
      server.close().catch(err => request.log.warn({ err }, 'closing the MCP server failed'))
    })

    try {
      await server.connect(transport)
      await transport.handleRequest(request.raw, reply.raw, request.body)
    } catch (err) {
      request.log.error({ err }, 'MCP request failed')
      if (!reply.raw.headersSent) {
        reply.raw.writeHead(500, { 'content-type': 'application/json' })
          .end(JSON.stringify(jsonRpcError(-32603, 'Internal server error')))
      }
    }
  })

  // Stateless: no standalone SSE stream to open (GET) and no session to end (DELETE).
  const notAllowed = async (_request: FastifyRequest, reply: FastifyReply) => {
    return reply.code(405).header('allow', 'POST').send(jsonRpcError(-32000, 'Method not allowed.'))
  }
  fastify.get('/mcp', { onRequest: guard }, notAllowed)
  fastify.delete('/mcp', { onRequest: guard }, notAllowed)
}

export default mcpRoutes
