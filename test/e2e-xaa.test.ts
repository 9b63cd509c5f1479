/**
 * Cross App Access end to end with the MCP TypeScript client 2.x: an enterprise app whose user
 * signed in at the development IdP connects to an MCP server behind the plugin without a browser.
 * CrossAppAccessProvider finds our authorization server from the 401, its assertion callback turns
 * the user's ID token into an ID-JAG at the IdP (RFC 8693), the provider trades it at our token
 * endpoint (jwt-bearer), and `tools/call whoami` sees the user an interactive login would give.
 */
import t from 'tap'
import Fastify from 'fastify'
import { Client, CrossAppAccessProvider, discoverAndRequestJwtAuthGrant, StreamableHTTPClientTransport } from '@modelcontextprotocol/client'
import { mcpOAuth } from '../lib/index.js'
import { oidcProvider } from '../lib/providers/oidc.js'
import { startDevIdp } from '../example/dev-idp.js'
import { mcpRoutes } from '../example/mcp.js'
import { idpLogin } from './helpers/idp-login.js'
import { freePort, REDIRECT } from './helpers/login.js'

const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer'
const PROXY = { id: 'mcp-proxy', secret: 'proxy-secret-proxy-secret-proxy-secret' }
// The enterprise app at the IdP, and the client id the IdP puts in its ID-JAGs for our server.
const APP = { id: 'wiki', secret: 'wiki-secret-wiki-secret' }
const APP_HERE = { id: 'wiki-at-mcp', secret: 'wiki-at-mcp-secret-secret' }

const port = await freePort()
const issuer = `http://127.0.0.1:${port}`
const idp = await startDevIdp({
  clients: [
    { client_id: PROXY.id, client_secret: PROXY.secret, redirect_uris: [`${issuer}/oauth/callback`] },
    { client_id: APP.id, client_secret: APP.secret, redirect_uris: [REDIRECT], crossAppAccess: { [issuer]: { client_id: APP_HERE.id, scopes: ['mcp:tools'] } } }
  ]
})
t.teardown(() => idp.close())

const app = Fastify({ logger: false })
await app.register(mcpOAuth, {
  issuer,
  resources: [`${issuer}/mcp`],
  // The upstream IdP is also the trusted enterprise IdP (the default): no enterprise section needed.
  provider: oidcProvider({ issuer: idp.issuer, clientId: PROXY.id, clientSecret: PROXY.secret, timeoutMs: 5000 }),
  clients: [{ client_id: APP_HERE.id, client_secret: APP_HERE.secret, grant_types: [JWT_BEARER] }],
  cookieSecret: 'cookie-secret-cookie-secret-cookie-secret'
})
await app.register(mcpRoutes)
await app.listen({ port, host: '127.0.0.1' })
t.teardown(() => app.close())

t.test('CrossAppAccessProvider: ID token -> ID-JAG -> access token -> tools/call whoami', async (t) => {
  const { idToken, sub } = await idpLogin({ issuer: idp.issuer, clientId: APP.id, clientSecret: APP.secret, redirectUri: REDIRECT, user: 'ann@corp.example' })
  const audiences: string[] = []
  const authProvider = new CrossAppAccessProvider({
    clientId: APP_HERE.id,
    clientSecret: APP_HERE.secret,
    expectedIssuer: issuer,
    assertion: async (ctx) => {
      audiences.push(ctx.authorizationServerUrl)
      const { jwtAuthGrant } = await discoverAndRequestJwtAuthGrant({
        idpUrl: idp.issuer,
        audience: ctx.authorizationServerUrl,
        resource: ctx.resourceUrl,
        idToken,
        clientId: APP.id,
        clientSecret: APP.secret,
        ...(ctx.scope !== undefined ? { scope: ctx.scope } : {}),
        fetchFn: ctx.fetchFn
      })
      return jwtAuthGrant
    }
  })
  const client = new Client({ name: 'xaa-e2e', version: '1.0.0' })
  const transport = new StreamableHTTPClientTransport(new URL(`${issuer}/mcp`), { authProvider })
  await client.connect(transport)
  t.teardown(() => client.close())

  const result = await client.callTool({ name: 'whoami', arguments: {} })
  const identity = result.structuredContent as Record<string, unknown>
  t.equal(identity.subjectType, 'user')
  t.equal(identity.userId, sub, 'the IdP subject, as an interactive login through it gives')
  t.equal(identity.clientId, APP_HERE.id)
  t.same(identity.scopes, ['mcp:tools'])
  t.equal(identity.resource, `${issuer}/mcp`)
  t.match(audiences[0], new RegExp(`^${issuer}/?$`), 'the ID-JAG was asked for our issuer')
  const tokens = await authProvider.tokens()
  t.equal(tokens?.refresh_token, undefined, 'no refresh token: a new ID-JAG next time')
})
