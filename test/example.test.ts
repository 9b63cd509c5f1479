import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { buildExample, configFromEnv, lifetimesFromEnv } from '../example/app.js'

interface Test { teardown (fn: () => unknown): void }

const ISSUER = 'http://127.0.0.1:3000'
const RESOURCE = `${ISSUER}/mcp`
const PRM = `${ISSUER}/.well-known/oauth-protected-resource/mcp`

async function example (t: Test): Promise<FastifyInstance> {
  const app = await buildExample({})
  t.teardown(() => app.close())
  return app
}

async function mint (app: FastifyInstance, scopes = ['mcp:tools']) {
  const grant = await app.mcpOAuth.grants.createGrant({
    userId: 'user-42',
    email: 'ada@example.com',
    clientId: 'client-7',
    scopes,
    resource: RESOURCE
  })
  return { grant, tokens: await app.mcpOAuth.grants.issueTokens(grant) }
}

/** The URL of the MCP endpoint on a real socket. */
async function listen (app: FastifyInstance): Promise<URL> {
  return new URL('/mcp', await app.listen({ host: '127.0.0.1', port: 0 }))
}

/** The real MCP SDK client, sending the token (if any) as a bearer token on every request. */
async function connect (t: Test, url: URL, token?: string): Promise<Client> {
  const transport = new StreamableHTTPClientTransport(url, token === undefined
    ? {}
    : { requestInit: { headers: { authorization: `Bearer ${token}` } } })
  const client = new Client({ name: 'example-test', version: '1.0.0' })
  t.teardown(() => client.close())
  await client.connect(transport)
  return client
}

const initialize = {
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '0' } }
}
const mcpHeaders = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }

t.test('configuration from the environment', async t => {
  t.same(configFromEnv({}), { port: 3000, host: '127.0.0.1', issuer: ISSUER, resource: RESOURCE, scopes: ['mcp:tools'] })
  t.equal(configFromEnv({ PORT: '8080', HOST: '0.0.0.0' }).issuer, 'http://127.0.0.1:8080', 'a wildcard bind is advertised as loopback')
  t.equal(configFromEnv({ HOST: 'localhost' }).issuer, 'http://localhost:3000')
  t.equal(configFromEnv({ MCP_OAUTH_ISSUER: 'https://mcp.example.com' }).resource, 'https://mcp.example.com/mcp')
  t.throws(() => configFromEnv({ PORT: 'http' }), /PORT/)
})

t.test('token lifetimes and the refresh grace from the environment', async t => {
  t.same(lifetimesFromEnv({}), {}, 'unset: the plugin decides')
  t.same(lifetimesFromEnv({ MCP_OAUTH_ACCESS_TOKEN_TTL: '', MCP_OAUTH_GRANT_TTL: '' }), {}, 'empty is unset')
  t.same(lifetimesFromEnv({
    MCP_OAUTH_ACCESS_TOKEN_TTL: '60',
    MCP_OAUTH_REFRESH_TOKEN_TTL: '600',
    MCP_OAUTH_GRANT_TTL: '3600',
    MCP_OAUTH_REFRESH_GRACE_SECONDS: '0',
    MCP_OAUTH_UPSTREAM_RECHECK_SECONDS: '120'
  }), { ttl: { accessToken: 60, refreshToken: 600, grant: 3600 }, refreshGraceSeconds: 0, upstreamRecheckSeconds: 120 })
  for (const bad of ['1h', '-5', '1.5', ' 60', '99999999999']) {
    t.throws(() => lifetimesFromEnv({ MCP_OAUTH_ACCESS_TOKEN_TTL: bad }), { message: `MCP_OAUTH_ACCESS_TOKEN_TTL must be a whole number of seconds, not "${bad}"` }, bad)
  }

  const app = await buildExample({ MCP_OAUTH_ACCESS_TOKEN_TTL: '60', MCP_OAUTH_REFRESH_GRACE_SECONDS: '5' })
  t.teardown(() => app.close())
  t.equal(app.mcpOAuth.config.ttl.accessToken, 60)
  t.equal(app.mcpOAuth.config.refreshGraceSeconds, 5)
  const { tokens } = await mint(app)
  t.equal(tokens.expires_in, 60, 'an access token lives as long as the environment said')
  await t.rejects(buildExample({ MCP_OAUTH_ACCESS_TOKEN_TTL: '0' }), /ttl\.accessToken/, 'the plugin checks the range')
})

t.test('GET / describes the server', async t => {
  const app = await example(t)
  const res = await app.inject('/')
  t.equal(res.statusCode, 200)
  t.match(res.json(), {
    issuer: ISSUER,
    mcp: RESOURCE,
    scopes: ['mcp:tools'],
    metadata: {
      authorizationServer: `${ISSUER}/.well-known/oauth-authorization-server`,
      protectedResource: [PRM]
    }
  })
  const prm = await app.inject(new URL(PRM).pathname)
  t.equal(prm.statusCode, 200, 'the advertised metadata is served')
  t.equal(prm.json().resource, RESOURCE)
})

t.test('every /mcp method without a token: 401 pointing at the protected resource metadata', async t => {
  const app = await example(t)
  for (const method of ['POST', 'GET', 'DELETE'] as const) {
    const res = await app.inject({ method, url: '/mcp', headers: mcpHeaders, ...(method === 'POST' ? { payload: initialize } : {}) })
    t.equal(res.statusCode, 401, method)
    t.equal(res.headers['www-authenticate'], `Bearer resource_metadata="${PRM}", scope="mcp:tools"`, method)
  }
})

t.test('GET and DELETE with a token: 405, the server is stateless', async t => {
  const app = await example(t)
  const { tokens } = await mint(app)
  for (const method of ['GET', 'DELETE'] as const) {
    const res = await app.inject({ method, url: '/mcp', headers: { authorization: `Bearer ${tokens.access_token}` } })
    t.equal(res.statusCode, 405, method)
    t.equal(res.headers.allow, 'POST')
    t.match(res.json(), { jsonrpc: '2.0', error: { code: -32000 }, id: null })
  }
})

t.test('the MCP SDK client without a token is refused with 401', async t => {
  const app = await example(t)
  await t.rejects(connect(t, await listen(app)), { code: 401 })
})

t.test('the MCP SDK client lists and calls the tools with a token', async t => {
  const app = await example(t)
  const { tokens, grant } = await mint(app)
  const client = await connect(t, await listen(app), tokens.access_token)

  const { tools } = await client.listTools()
  t.same(tools.map(tool => tool.name).sort(), ['echo', 'whoami'])

  const identity = {
    subjectType: 'user',
    userId: 'user-42',
    email: 'ada@example.com',
    clientId: 'client-7',
    scopes: ['mcp:tools'],
    resource: RESOURCE,
    expiresAt: Math.floor(grant.createdAt / 1000) + 3600
  }
  const who = await client.callTool({ name: 'whoami', arguments: {} })
  t.notOk(who.isError)
  t.same(who.structuredContent, identity)
  const content = who.content as Array<{ type: string, text: string }>
  t.equal(content[0]?.type, 'text')
  t.same(JSON.parse(content[0]?.text ?? 'null'), identity)

  const echo = await client.callTool({ name: 'echo', arguments: { text: 'héllo, MCP' } })
  t.same(echo.content, [{ type: 'text', text: 'héllo, MCP' }])

  const bad = await client.callTool({ name: 'echo', arguments: { text: 42 } })
  t.ok(bad.isError, 'input is validated against the tool schema')
})

t.test('each request sees its own token identity', async t => {
  const app = await example(t)
  const other = await app.mcpOAuth.grants.createGrant({ userId: 'user-9', clientId: 'client-1', scopes: ['mcp:tools'], resource: RESOURCE })
  const [a, b] = await Promise.all([mint(app), app.mcpOAuth.grants.issueTokens(other)])
  const url = await listen(app)
  const clientA = await connect(t, url, a.tokens.access_token)
  const clientB = await connect(t, url, b.access_token)
  const [whoA, whoB] = await Promise.all([
    clientA.callTool({ name: 'whoami', arguments: {} }),
    clientB.callTool({ name: 'whoami', arguments: {} })
  ])
  t.match(whoA.structuredContent, { userId: 'user-42', clientId: 'client-7' })
  t.match(whoB.structuredContent, { userId: 'user-9', clientId: 'client-1' })
  t.notOk((whoB.structuredContent as Record<string, unknown>).email, 'no e-mail when the grant has none')
})

t.test('a token without mcp:tools: 403 insufficient_scope', async t => {
  const app = await example(t)
  const grant = await app.mcpOAuth.grants.createGrant({ userId: 'user-42', clientId: 'client-7', scopes: ['mcp:other'], resource: RESOURCE })
  const { access_token: token } = await app.mcpOAuth.grants.issueTokens(grant)

  const res = await app.inject({ method: 'POST', url: '/mcp', headers: { ...mcpHeaders, authorization: `Bearer ${token}` }, payload: initialize })
  t.equal(res.statusCode, 403)
  t.equal(res.json().error, 'insufficient_scope')
  t.match(res.headers['www-authenticate'], /^Bearer error="insufficient_scope", .*resource_metadata=".*\/\.well-known\/oauth-protected-resource\/mcp", scope="mcp:tools"$/)

  await t.rejects(connect(t, await listen(app), token), { code: 403 })
})

t.test('the embedded development IdP is refused in production, and a half-configured provider too', async t => {
  await t.rejects(buildExample({ NODE_ENV: 'production', PORT: '3000' }), /refused when NODE_ENV=production/)
  await t.rejects(buildExample({ GOOGLE_CLIENT_ID: 'x', PORT: '3000' }), /GOOGLE_CLIENT_SECRET is required/)
  await t.rejects(buildExample({ OIDC_ISSUER: 'https://id.example.com', PORT: '3000' }), /OIDC_CLIENT_ID is required/)
})
