/**
 * Cross App Access with `npm start`: MCP_OAUTH_XAA_SECRET makes the example's development IdP an
 * enterprise IdP for the example's own issuer, and example/xaa-client.ts runs the flow against it.
 */
import t from 'tap'
import { requestJwtAuthorizationGrant } from '@modelcontextprotocol/client'
import { buildExample, XAA } from '../example/app.js'
import { crossAppAccessInfo, signIn, whoami } from '../example/xaa-client.js'
import { Browser } from './helpers/browser.js'
import { idpLogin } from './helpers/idp-login.js'
import { freePort } from './helpers/login.js'

const SECRET = 'a-newcomer-chose-this-secret'
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer'

interface Test { teardown (fn: () => unknown): void }

async function start (t: Test, env: Record<string, string> = {}) {
  const port = await freePort()
  const issuer = `http://127.0.0.1:${port}`
  const app = await buildExample({ PORT: String(port), MCP_OAUTH_ISSUER: issuer, ...env })
  t.teardown(() => app.close())
  await app.listen({ port, host: '127.0.0.1' })
  return { app, issuer }
}

t.test('with MCP_OAUTH_XAA_SECRET, the dev IdP issues ID-JAGs the token endpoint accepts', async (t) => {
  const { app, issuer } = await start(t, { MCP_OAUTH_XAA_SECRET: SECRET })
  const info = await crossAppAccessInfo(issuer)
  t.match(info, { idpClientId: XAA.idpClientId, clientId: XAA.clientId, redirectUri: XAA.redirectUri })
  t.not(JSON.stringify(info).includes(SECRET), true, 'the help page does not show the secret')

  const { idToken, sub } = await idpLogin({ issuer: info.idp, clientId: XAA.idpClientId, clientSecret: SECRET, redirectUri: XAA.redirectUri, user: 'ann@corp.example' })
  const { jwtAuthGrant } = await requestJwtAuthorizationGrant({
    tokenEndpoint: `${info.idp}/token`,
    audience: issuer,
    resource: `${issuer}/mcp`,
    idToken,
    clientId: XAA.idpClientId,
    clientSecret: SECRET
  })
  const basic = `Basic ${Buffer.from(`${XAA.clientId}:${SECRET}`).toString('base64')}`
  const res = await app.inject({ method: 'POST', url: '/oauth/token', headers: { authorization: basic }, payload: { grant_type: JWT_BEARER, assertion: jwtAuthGrant } })
  t.equal(res.statusCode, 200, res.statusCode === 200 ? 'the token endpoint accepts the ID-JAG' : res.body)
  const body = res.json()
  t.equal(body.scope, 'mcp:tools', 'the IdP policy grants the tools scope')
  t.equal(body.refresh_token, undefined)
  t.match(await app.mcpOAuth.validator.validate(body.access_token), { valid: true, auth: { userId: sub, clientId: XAA.clientId } },
    'the same user as a login through the dev IdP')

  const again = await app.inject({ method: 'POST', url: '/oauth/token', headers: { authorization: basic }, payload: { grant_type: JWT_BEARER, assertion: jwtAuthGrant } })
  t.equal(again.json().error, 'invalid_grant', 'an ID-JAG is used once')
})

t.test('example/xaa-client.ts: sign-in on its loopback callback, then whoami through CrossAppAccessProvider', async (t) => {
  const { issuer } = await start(t, { MCP_OAUTH_XAA_SECRET: SECRET })
  const info = await crossAppAccessInfo(issuer)
  // The person at the browser: logs in, and the IdP's redirect reaches the script's callback server.
  const idToken = await signIn(info, SECRET, async (url) => {
    const page = await new Browser().drive(url, { stopAt: (u) => u.href.startsWith(XAA.redirectUri), fields: { login: 'bob', password: 'any' } })
    t.equal((await fetch(page.stoppedAt as URL)).status, 200, 'the callback page answers')
  })
  const identity = await whoami(issuer, info, SECRET, idToken)
  t.match(identity, { subjectType: 'user', userId: 'bob', clientId: XAA.clientId, scopes: ['mcp:tools'], resource: `${issuer}/mcp` })
})

t.test('example/xaa-client.ts: a browser that fails ends the sign-in at once and frees the callback port', async (t) => {
  const { issuer } = await start(t, { MCP_OAUTH_XAA_SECRET: SECRET })
  const info = await crossAppAccessInfo(issuer)
  await t.rejects(signIn(info, SECRET, () => { throw new Error('no browser here') }), { message: 'no browser here' })
  await t.rejects(signIn(info, SECRET, async () => { throw new Error('still none') }), { message: 'still none' }, 'the port is free again')
})

t.test('without MCP_OAUTH_XAA_SECRET there is no enterprise app', async (t) => {
  const { app, issuer } = await start(t)
  await t.rejects(crossAppAccessInfo(issuer), /start it with MCP_OAUTH_XAA_SECRET set/)
  t.equal(app.mcpOAuth.config.clients.length, 0, 'no static client at the plugin')
  // The dev IdP does not know the enterprise app either, and does not offer ID-JAGs.
  const help = (await app.inject('/')).json() as { login: string }
  const idp = /at (http:\/\/127\.0\.0\.1:\d+)/.exec(help.login)?.[1] as string
  const discovery = await (await fetch(`${idp}/.well-known/openid-configuration`)).json() as Record<string, unknown>
  t.equal(discovery.identity_chaining_requested_token_types_supported, undefined)
  const exchange = await fetch(`${idp}/token`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`${XAA.idpClientId}:${SECRET}`).toString('base64')}` },
    body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', subject_token: 'x', subject_token_type: 'urn:ietf:params:oauth:token-type:id_token' })
  })
  t.equal((await exchange.json() as { error: string }).error, 'invalid_client')
  const res = await app.inject({
    method: 'POST',
    url: '/oauth/token',
    headers: { authorization: `Basic ${Buffer.from(`${XAA.clientId}:${SECRET}`).toString('base64')}` },
    payload: { grant_type: JWT_BEARER, assertion: 'x.y.z' }
  })
  t.equal(res.json().error, 'invalid_client')
})

t.test('a short MCP_OAUTH_XAA_SECRET stops the start, without showing it', async (t) => {
  await t.rejects(buildExample({ MCP_OAUTH_XAA_SECRET: 'short-secret' }), { message: 'MCP_OAUTH_XAA_SECRET must be at least 16 characters long' })
})
