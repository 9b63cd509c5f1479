import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import type { McpAuthInfo } from '../lib/index.js'
import { EchoInputShape, TOOL_INFO, TOOLS_SCOPE, WhoAmIShape, whoAmI, type McpRoutesOptions } from './mcp.js'

/*
 * The MCP endpoint for servers still on the MCP TypeScript SDK 1.x (`@modelcontextprotocol/sdk`):
 * the same guard and the same `whoami` and `echo` tools as ./mcp.ts, over the SDK 1.x Streamable
 * HTTP transport in stateless mode (protocol revisions up to 2025-11-25). SDK 1.x has no per-tool
 * scope challenge, so `upstreamScope` is not served here: the `upstream_token` tool needs SDK v2.
 *
 *   await app.register(mcpOAuth, { ... })
 *   await app.register(mcpRoutesSdk1, { scopes: ['mcp:tools'] })
 */

/** One SDK 1.x server for one request; the identity reaches the tools through this closure only. */
export function createMcpServerSdk1 (auth: McpAuthInfo): McpServer {
  const server = new McpServer({ name: 'fastify-mcp-oauth-example', version: '0.1.0' })

  server.registerTool('whoami', { ...TOOL_INFO.whoami, outputSchema: WhoAmIShape }, async () => {
    const identity = whoAmI(auth)
    return {
      content: [{ type: 'text', text: JSON.stringify(identity) }],
      structuredContent: { ...identity }
    }
  })

  server.registerTool('echo', { ...TOOL_INFO.echo, inputSchema: EchoInputShape }, async ({ text }) => ({
    content: [{ type: 'text', text }]
  }))

  return server
}

function jsonRpcError (code: number, message: string) {
  return { jsonrpc: '2.0', error: { code, message }, id: null }
}

/** `/mcp` on SDK 1.x: every POST gets a fresh server and transport, behind the OAuth guard. */
export const mcpRoutesSdk1: FastifyPluginAsync<McpRoutesOptions> = async (fastify, opts) => {
  const guard = fastify.mcpOAuth.authenticate({ scopes: opts.scopes ?? [TOOLS_SCOPE] })

  fastify.post('/mcp', { onRequest: guard }, async (request: FastifyRequest, reply: FastifyReply) => {
    const auth = request.mcpAuth
    if (auth === null) throw new Error('the OAuth guard did not run on /mcp')

    const server = createMcpServerSdk1(auth)
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

export default mcpRoutesSdk1
