import t from 'tap'
import { buildApp } from './helpers/app.js'
import { buildTokens } from '../lib/token/issue.js'
import { hashToken, looksLike, TOKEN_PREFIX } from '../lib/oauth/tokens.js'
import type { GrantRecord } from '../lib/storage/contract.js'

const NOW = 1_700_000_000_000
const TTL = { accessToken: 3600, refreshToken: 86400 }
const GRANT: GrantRecord = {
  grantId: 'g-1',
  userId: 'u-1',
  email: 'grant@example.com',
  clientId: 'c-1',
  scopes: ['mcp:tools', 'mcp:admin'],
  resource: 'https://auth.example.com/mcp',
  createdAt: NOW,
  expiresAt: NOW + 7 * 86400_000
}

t.test('buildTokens: the records under the hashes of the tokens the response carries', async t => {
  const { access, refresh, response } = buildTokens(TTL, { grant: GRANT, scopes: GRANT.scopes, email: GRANT.email, now: NOW })
  t.ok(looksLike('accessToken', response.access_token))
  t.ok(looksLike('refreshToken', response.refresh_token))
  t.equal(access.hash, hashToken(response.access_token))
  t.equal(refresh.hash, hashToken(response.refresh_token))
  t.same(access.token, {
    grantId: 'g-1', clientId: 'c-1', userId: 'u-1', scopes: GRANT.scopes, resource: GRANT.resource, issuedAt: NOW, expiresAt: NOW + 3600_000, email: 'grant@example.com'
  })
  t.same(refresh.token, { grantId: 'g-1', clientId: 'c-1', scopes: GRANT.scopes, issuedAt: NOW, expiresAt: NOW + 86400_000 })
  t.same(response, {
    access_token: response.access_token, token_type: 'Bearer', expires_in: 3600, refresh_token: response.refresh_token, scope: 'mcp:tools mcp:admin'
  })
  const again = buildTokens(TTL, { grant: GRANT, scopes: GRANT.scopes, email: GRANT.email, now: NOW })
  t.not(again.response.access_token, response.access_token, 'drawn at random when not given')
})

t.test('buildTokens: narrowed access scopes, the refresh token\'s own, no e-mail, given values, capped by the grant', async t => {
  const values = { accessToken: TOKEN_PREFIX.accessToken + 'a'.repeat(43), refreshToken: TOKEN_PREFIX.refreshToken + 'r'.repeat(43) }
  const ending = { ...GRANT, expiresAt: NOW + 1500 }
  const { access, refresh, response } = buildTokens(TTL, {
    grant: ending, scopes: ['mcp:tools'], refreshScopes: GRANT.scopes, email: undefined, values, now: NOW
  })
  t.equal(response.access_token, values.accessToken)
  t.equal(response.refresh_token, values.refreshToken)
  t.equal(access.hash, hashToken(values.accessToken))
  t.same(access.token.scopes, ['mcp:tools'])
  t.equal(response.scope, 'mcp:tools', 'the response says the access token\'s scopes')
  t.same(refresh.token.scopes, GRANT.scopes)
  t.notOk('email' in access.token)
  t.equal(access.token.expiresAt, ending.expiresAt, 'never past the grant')
  t.equal(refresh.token.expiresAt, ending.expiresAt)
  t.equal(response.expires_in, 1)
})

t.test('dispatch: an unknown grant type, and a grant type the client is not registered for', async t => {
  const { app, clock } = await buildApp(t)
  // Registration and static clients always get both grant types; a record in the store may have fewer.
  await app.mcpOAuth.storage.saveClient({
    clientId: 'code-only',
    redirectUris: ['https://app.example.com/cb'],
    tokenEndpointAuthMethod: 'none',
    grantTypes: ['authorization_code'],
    responseTypes: ['code'],
    applicationType: 'web',
    metadata: {},
    clientIdIssuedAt: Math.floor(clock.now() / 1000),
    source: 'dcr'
  })
  const token = (payload: Record<string, string>) => app.inject({ method: 'POST', url: '/oauth/token', payload: { client_id: 'code-only', ...payload } })

  const unknown = await token({ grant_type: 'password' })
  t.equal(unknown.statusCode, 400)
  t.same(unknown.json(), { error: 'unsupported_grant_type', error_description: 'grant_type must be one of authorization_code, refresh_token, client_credentials' })
  const inherited = await token({ grant_type: 'constructor' })
  t.equal(inherited.json().error, 'unsupported_grant_type', 'only the table\'s own grant types')
  const notRegistered = await token({ grant_type: 'refresh_token', refresh_token: 'x' })
  t.equal(notRegistered.statusCode, 400)
  t.same(notRegistered.json(), { error: 'unauthorized_client', error_description: 'This client is not registered for refresh_token' })
  t.equal(notRegistered.headers['cache-control'], 'no-store')
})
