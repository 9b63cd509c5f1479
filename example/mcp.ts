import type { FastifyPluginAsync, FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify'
import { createMcpHandler, McpServer, requireScopes, type AuthInfo, type McpRequestContext } from '@modelcontextprotocol/server'
import { localhostHostValidation, localhostOriginValidation } from '@modelcontextprotocol/fastify'
import { z } from 'zod'
import { UpstreamTokenError, type McpAuthInfo, type UpstreamAccess } from '../lib/index.js'

/** The scope every MCP request needs. */
export const TOOLS_SCOPE = 'mcp:tools'
/** The scope of the `upstream_token` tool, asked for by step-up only when a client calls that tool. */
export const UPSTREAM_SCOPE = 'mcp:upstream'

export interface McpRoutesOptions {
  /** Scopes every /mcp request must carry. Default [TOOLS_SCOPE]. */
  scopes?: string[]
  /**
   * The scope that the `upstream_token` tool demands; the tool is there only when this is set (the
   * plugin must offer the scope, or clients cannot step up to it).
   */
  upstreamScope?: string
}

/**
 * The part of the access token's identity the `whoami` tool reveals (the grant id stays internal;
 * `email` is present only when verified, so `emailVerified` adds nothing here).
 */
export type WhoAmI = Omit<McpAuthInfo, 'grantId' | 'emailVerified'>

/** The output schema of `whoami`, one line per field of WhoAmI; shared with the SDK 1.x example. */
export const WhoAmIShape = {
  subjectType: z.enum(['user', 'client']),
  userId: z.string(),
  email: z.string().optional(),
  clientId: z.string(),
  scopes: z.array(z.string()),
  resource: z.string(),
  expiresAt: z.number().int()
}

export function whoAmI (auth: McpAuthInfo): WhoAmI {
  // Everything but what WhoAmI leaves out, so a field added to McpAuthInfo shows up here by itself.
  const { grantId: _grantId, emailVerified: _emailVerified, ...identity } = auth
  return identity
}

/** Titles, descriptions and hints of the tools, the same whichever SDK serves them. */
export const TOOL_INFO = {
  whoami: {
    title: 'Who am I',
    description: 'The identity behind the access token of this request: user, client, scopes, audience, expiry',
    annotations: { readOnlyHint: true, openWorldHint: false }
  },
  echo: {
    title: 'Echo',
    description: 'Returns the text it is given',
    annotations: { readOnlyHint: true, openWorldHint: false }
  },
  upstream_token: {
    title: 'Upstream token',
    description: 'Whether the identity provider\'s access token for this login can be used, with its type, scope and ' +
      'expiry (the token itself stays on the server). Needs a scope of its own: clients step up to it.',
    annotations: { readOnlyHint: true, openWorldHint: true }
  }
} as const

export const EchoInputShape = { text: z.string().describe('The text to send back') }

/** What one request's tools may know and do, handed to the SDK as `authInfo.extra`. */
export interface ToolContext {
  auth: McpAuthInfo
  /** The identity provider's token for this request's grant (the plugin's getUpstreamToken). */
  upstreamToken: () => Promise<UpstreamAccess>
}

const UpstreamStatusSchema = z.object({
  tokenType: z.string().optional(),
  scope: z.string().optional(),
  /** Epoch seconds. */
  expiresAt: z.number().int().optional()
})

/**
 * One MCP server for one request. The caller's identity reaches the tools through this closure,
 * so nothing about a user outlives the request or leaks into another one.
 */
export function createMcpServer (tools: ToolContext, opts: Pick<McpRoutesOptions, 'upstreamScope'> = {}): McpServer {
  const server = new McpServer({ name: 'fastify-mcp-oauth-example', version: '0.1.0' })

  server.registerTool('whoami', { ...TOOL_INFO.whoami, outputSchema: z.object(WhoAmIShape) }, async () => {
    const identity = whoAmI(tools.auth)
    return {
      content: [{ type: 'text', text: JSON.stringify(identity) }],
      structuredContent: { ...identity }
    }
  })

  server.registerTool('echo', { ...TOOL_INFO.echo, inputSchema: z.object(EchoInputShape) }, async ({ text }) => ({
    content: [{ type: 'text', text }]
  }))

  if (opts.upstreamScope !== undefined) {
    server.registerTool('upstream_token', {
      ...TOOL_INFO.upstream_token,
      outputSchema: UpstreamStatusSchema,
      // Answered before the tool runs: 403 insufficient_scope naming the scope, which clients step up to.
      scopeChallenge: requireScopes(opts.upstreamScope)
    }, async () => {
      try {
        const upstream = await tools.upstreamToken()
        const status: z.infer<typeof UpstreamStatusSchema> = {}
        if (upstream.tokenType !== undefined) status.tokenType = upstream.tokenType
        if (upstream.scope !== undefined) status.scope = upstream.scope
        if (upstream.expiresAt !== undefined) status.expiresAt = Math.floor(upstream.expiresAt / 1000)
        return { content: [{ type: 'text', text: JSON.stringify(status) }], structuredContent: status }
      } catch (err) {
        // The plugin's messages name no secret; anything else is a bug and goes to the SDK's error path.
        if (!(err instanceof UpstreamTokenError)) throw err
        return { isError: true, content: [{ type: 'text', text: err.message }] }
      }
    })
  }

  return server
}

/** The guard's identity in the SDK's shape: the SDK checks scope challenges against it. */
function sdkAuthInfo (request: FastifyRequest, tools: ToolContext, metadataUrl: string | undefined): AuthInfo {
  const { auth } = tools
  const token = /^bearer +(\S+)$/i.exec(request.headers.authorization ?? '')?.[1]
  if (token === undefined) throw new Error('the OAuth guard admitted a request without a bearer token')
  return {
    token,
    clientId: auth.clientId,
    scopes: auth.scopes,
    expiresAt: auth.expiresAt,
    resource: new URL(auth.resource),
    ...(metadataUrl !== undefined ? { resourceMetadataUrl: metadataUrl } : {}),
    extra: { tools }
  }
}

function toolContextOf (ctx: McpRequestContext): ToolContext {
  const tools = ctx.authInfo?.extra?.tools as ToolContext | undefined
  if (tools === undefined) throw new Error('an MCP request reached the SDK without the OAuth guard\'s identity')
  return tools
}

/** The Fastify request as the web Request the SDK's handler takes (the body is passed parsed, apart). */
function webRequest (request: FastifyRequest, signal: AbortSignal): Request {
  const headers = new Headers()
  for (const [name, value] of Object.entries(request.headers)) {
    if (typeof value === 'string') headers.set(name, value)
    else if (Array.isArray(value)) for (const v of value) headers.append(name, v)
  }
  return new Request(`${request.protocol}://${request.host}${request.url}`, { method: request.method, headers, signal })
}

const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]'])

/**
 * The MCP endpoint at `/mcp`: the SDK's `createMcpHandler`, which serves the 2026-07-28 protocol per
 * request and 2025-era clients (2025-11-25 and before) statelessly, each request from a fresh server
 * of the factory, so any replica can answer any request. Every method is behind the OAuth guard.
 */
export const mcpRoutes: FastifyPluginAsync<McpRoutesOptions> = async (fastify, opts) => {
  const guard = fastify.mcpOAuth.authenticate({ scopes: opts.scopes ?? [TOOLS_SCOPE] })
  const { resources } = fastify.mcpOAuth.config

  const handler = createMcpHandler(ctx => createMcpServer(toolContextOf(ctx), opts), {
    onerror: err => fastify.log.warn({ err }, 'MCP request failed or was refused')
  })
  fastify.addHook('onClose', () => handler.close())

  // DNS rebinding: a web page whose name now points at a loopback server must not reach it. The
  // adapter's checks for a loopback server, as its createMcpFastifyApp sets them up; behind a public
  // name the bearer token is what protects (add hostHeaderValidation() yourself to pin the names).
  const onRequest: onRequestHookHandler[] = resources.every(r => LOOPBACK.has(new URL(r.resource).hostname))
    ? [localhostHostValidation(), localhostOriginValidation(), guard]
    : [guard]

  fastify.route({
    method: ['POST', 'GET', 'DELETE'],
    url: '/mcp',
    onRequest,
    handler: async (request: FastifyRequest, reply: FastifyReply) => {
      const auth = request.mcpAuth
      if (auth === null) throw new Error('the OAuth guard did not run on /mcp')
      const tools: ToolContext = { auth, upstreamToken: () => fastify.mcpOAuth.getUpstreamToken(request) }
      const metadataUrl = resources.find(r => r.resource === auth.resource)?.metadataUrl

      // A client that goes away cancels what its request started.
      const abort = new AbortController()
      reply.raw.once('close', () => { if (!reply.raw.writableFinished) abort.abort() })
      return handler.fetch(webRequest(request, abort.signal), {
        authInfo: sdkAuthInfo(request, tools, metadataUrl),
        ...(request.body !== undefined ? { parsedBody: request.body } : {})
      })
    }
  })
}

export default mcpRoutes
