import { test } from 'tap'
import { buildApp, RESOURCE } from './helpers/app.js'

// Client authentication at the introspection endpoint: the configured resource servers and the
// registered clients share one HTTP Basic parser (lib/clients/authenticate.ts).

const RS = { id: 'resource-server', secret: 'rs-secret-with-%-sign-1234567890' }
const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`

async function introspect (t: Parameters<typeof buildApp>[0], authorization: string) {
  const ctx = await buildApp(t, { introspection: { resourceServers: [RS] } })
  const grant = await ctx.app.mcpOAuth.grants.createGrant({ userId: 'u-1', clientId: 'c', scopes: ['mcp:tools'], resource: RESOURCE })
  const { access_token: token } = await ctx.app.mcpOAuth.grants.issueTokens(grant)
  const res = await ctx.app.inject({
    method: 'POST',
    url: '/oauth/introspect',
    headers: { authorization, 'content-type': 'application/x-www-form-urlencoded' },
    payload: new URLSearchParams({ token }).toString()
  })
  return { status: res.statusCode, body: res.json() as Record<string, unknown>, challenge: res.headers['www-authenticate'] }
}

test('a resource server authenticates with its secret form-encoded (RFC 6749 §2.3.1)', async (t) => {
  const res = await introspect(t, basic(RS.id, encodeURIComponent(RS.secret)))
  t.equal(res.status, 200)
  t.equal(res.body.active, true)
})

test("a resource server that sends a secret's raw '%' unencoded is still accepted, as it always was", async (t) => {
  const res = await introspect(t, basic(RS.id, RS.secret))
  t.equal(res.status, 200)
  t.equal(res.body.active, true)
})

test('a wrong resource-server secret is refused with the Basic challenge, the raw form too', async (t) => {
  for (const secret of ['rs-secret-with-%-sign-0000000000', encodeURIComponent('rs-secret-with-%-sign-0000000000')]) {
    const res = await introspect(t, basic(RS.id, secret))
    t.equal(res.status, 401)
    t.same(res.body, { error: 'invalid_client', error_description: 'Client authentication failed' })
    t.equal(res.challenge, 'Basic realm="oauth"')
  }
})

test('Basic credentials without a colon are malformed', async (t) => {
  const res = await introspect(t, `Basic ${Buffer.from('no-colon').toString('base64')}`)
  t.equal(res.status, 401)
  t.same(res.body, { error: 'invalid_client', error_description: 'Malformed Basic credentials' })
})

test('client_secret_basic: id and secret are form-decoded ("+" is a space, %XX an octet), and only then compared', async (t) => {
  const client = { client_id: 'odd id:+', client_secret: 'secret with spaces+plus%and:colon', grant_types: ['client_credentials' as const] }
  const ctx = await buildApp(t, { clients: [client] })
  const send = (id: string, secret: string) => ctx.app.inject({
    method: 'POST',
    url: '/oauth/token',
    headers: { authorization: basic(id, secret), 'content-type': 'application/x-www-form-urlencoded' },
    payload: new URLSearchParams({ grant_type: 'client_credentials', resource: RESOURCE }).toString()
  })
  // URLSearchParams encodes as RFC 6749 §2.3.1 asks (application/x-www-form-urlencoded: a space is "+").
  const encode = (v: string) => new URLSearchParams({ v }).toString().slice(2)
  const ok = await send(encode(client.client_id), encode(client.client_secret))
  t.equal(ok.statusCode, 200, 'the encoded pair authenticates')
  const percent = await send(encodeURIComponent(client.client_id), encodeURIComponent(client.client_secret))
  t.equal(percent.statusCode, 200, 'percent-encoded spaces too')
  const raw = await send('odd id', 'secret with spaces plus%and')
  t.equal(raw.statusCode, 401, 'a raw "%" that is no escape is malformed at the token endpoint')
  t.same(raw.json(), { error: 'invalid_client', error_description: 'Malformed Basic credentials' })
  const unencoded = await send(client.client_id.replace('+', ''), 'secret+with+spaces+plus')
  t.equal(unencoded.statusCode, 401)
  t.same(unencoded.json(), { error: 'invalid_client', error_description: 'Unknown client' })
})
