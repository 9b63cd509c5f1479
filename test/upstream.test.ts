import t from 'tap'
import { generateKey } from '../lib/index.js'
import { KeyRing } from '../lib/security/keyring.js'
import { loginTokens, readUpstream, startLogin, writeUpstream } from './helpers/login.js'
import { oidcProvider } from '../lib/providers/oidc.js'

t.test('key ring: round trip, rotation, tampering, wrong record', async t => {
  const k1 = generateKey()
  const k2 = generateKey()
  const old = new KeyRing([{ id: 'k1', key: k1 }])
  const sealed = old.seal('{"accessToken":"secret"}', 'grant-1')
  t.match(sealed, /^e1\.k1\./)
  t.notMatch(sealed, 'secret')
  t.equal(old.open(sealed, 'grant-1'), '{"accessToken":"secret"}')
  t.not(old.seal('x', 'g'), old.seal('x', 'g'), 'fresh IV every time')

  const rotated = new KeyRing([{ id: 'k1', key: k1 }, { id: 'k2', key: k2 }])
  t.equal(rotated.open(sealed, 'grant-1'), '{"accessToken":"secret"}', 'old keys still decrypt')
  t.match(rotated.seal('x', 'g'), /^e1\.k2\./, 'the newest key encrypts')
  t.throws(() => new KeyRing([{ id: 'k2', key: k2 }]).open(sealed, 'grant-1'), /no key "k1"/, 'retired key')

  const parts = sealed.split('.')
  const body = Buffer.from(parts[3] as string, 'base64url')
  body[0] = (body[0] as number) ^ 1
  const tampered = [...parts.slice(0, 3), body.toString('base64url'), parts[4]].join('.')
  t.throws(() => old.open(tampered, 'grant-1'), /failed authentication/, 'tampered ciphertext refused')
  t.throws(() => old.open(sealed, 'grant-2'), /failed authentication/, 'bound to its record')
  t.throws(() => old.open('e1.k1.x', 'grant-1'), /malformed/)
  t.throws(() => old.open('zz', 'grant-1'), /unknown ciphertext format/)

  const plain = new KeyRing()
  t.notOk(plain.encrypting)
  const p = plain.seal('hello', 'g')
  t.equal(plain.open(p, 'g'), 'hello')
  t.equal(rotated.open(p, 'g'), 'hello', 'values written before encryption was turned on stay readable')

  t.throws(() => new KeyRing([{ id: 'bad id', key: k1 }]), /key id/)
  t.throws(() => new KeyRing([{ id: 'a', key: 'c2hvcnQ' }]), /32 bytes/)
  t.throws(() => new KeyRing([{ id: 'a', key: k1 }, { id: 'a', key: k2 }]), /twice/)
  t.equal(new KeyRing([{ id: 'std', key: Buffer.from(k1, 'base64url').toString('base64') }]).open(
    new KeyRing([{ id: 'std', key: k1 }]).seal('same key, other alphabet', 'g'), 'g'), 'same key, other alphabet')
})

t.test('upstream tokens are stored encrypted in the grant', async t => {
  const h = await startLogin(t, { encryption: { keys: [{ id: 'k1', key: generateKey() }] } })
  const tokens = await loginTokens(h)
  const auth = await h.app.mcpOAuth.validator.validate(tokens.access_token as string)
  t.ok(auth.valid)
  if (!auth.valid) return
  const grant = await h.app.mcpOAuth.storage.getGrant(auth.auth.grantId, Date.now())
  t.match(grant?.upstream, /^e1\.k1\./)
  const res = await fetch(`${h.issuer}/mcp/upstream`, { method: 'POST', headers: { authorization: `Bearer ${tokens.access_token as string}` } })
  t.equal(res.status, 200)
  const upstream = await res.json() as { accessToken: string }
  t.ok(upstream.accessToken.length > 10)
  t.notMatch(grant?.upstream, upstream.accessToken, 'the upstream token is not in the stored grant in clear')
})

/** Make the stored upstream access token look close to expiry (as if time had passed). */
async function ageUpstream (h: Awaited<ReturnType<typeof startLogin>>, accessToken: string): Promise<void> {
  const { grantId, tokens } = await readUpstream(h, accessToken)
  await writeUpstream(h, grantId, { ...tokens, expiresAt: Date.now() + 60_000 })
}

t.test('getUpstreamToken: 50 concurrent callers make one upstream refresh', async t => {
  const h = await startLogin(t)
  const tokens = await loginTokens(h)
  const fresh = await fetch(`${h.issuer}/mcp/upstream`, { method: 'POST', headers: { authorization: `Bearer ${tokens.access_token as string}` } })
  t.equal(fresh.status, 200)
  t.equal(h.idp.refreshCount(), 0, 'a fresh upstream token is used as it is')
  await ageUpstream(h, tokens.access_token as string)
  const results = await Promise.all(Array.from({ length: 50 }, () =>
    fetch(`${h.issuer}/mcp/upstream`, { method: 'POST', headers: { authorization: `Bearer ${tokens.access_token as string}` } })
      .then(async r => ({ status: r.status, body: await r.json() as { accessToken: string } }))))
  t.ok(results.every(r => r.status === 200), 'every caller got a token')
  t.equal(h.idp.refreshCount(), 1, 'exactly one refresh reached the identity provider')
  t.equal(new Set(results.map(r => r.body.accessToken)).size, 1, 'everyone got the refreshed token')
  t.not(results[0]?.body.accessToken, (await fresh.json() as { accessToken: string }).accessToken, 'a new upstream token')
  await ageUpstream(h, tokens.access_token as string)
  const again = await fetch(`${h.issuer}/mcp/upstream`, { method: 'POST', headers: { authorization: `Bearer ${tokens.access_token as string}` } })
  t.equal(again.status, 200, 'the rotated upstream refresh token was stored and works next time')
  t.equal(h.idp.refreshCount(), 2)
})

t.test('getUpstreamToken: provider down is retryable, the grant survives', async t => {
  const h = await startLogin(t)
  const tokens = await loginTokens(h)
  await ageUpstream(h, tokens.access_token as string)
  await h.idp.close()
  const res = await fetch(`${h.issuer}/mcp/upstream`, { method: 'POST', headers: { authorization: `Bearer ${tokens.access_token as string}` } })
  t.equal(res.status, 503)
  const mcp = await fetch(`${h.issuer}/mcp`, { method: 'POST', headers: { authorization: `Bearer ${tokens.access_token as string}` } })
  t.equal(mcp.status, 200, 'our grant is untouched')
})

t.test('getUpstreamToken: upstream invalid_grant revokes our grant', async t => {
  const h = await startLogin(t)
  const tokens = await loginTokens(h)
  const first = await fetch(`${h.issuer}/mcp/upstream`, { method: 'POST', headers: { authorization: `Bearer ${tokens.access_token as string}` } })
  t.equal(first.status, 200)
  // An upstream refresh token the IdP does not know (spent, or revoked behind our back).
  const { grantId } = await readUpstream(h, tokens.access_token as string)
  await writeUpstream(h, grantId, { accessToken: 'x', refreshToken: 'used-or-unknown-refresh-token', expiresAt: Date.now() })
  const res = await fetch(`${h.issuer}/mcp/upstream`, { method: 'POST', headers: { authorization: `Bearer ${tokens.access_token as string}` } })
  t.equal(res.status, 401, 'not retryable: sign in again')
  const mcp = await fetch(`${h.issuer}/mcp`, { method: 'POST', headers: { authorization: `Bearer ${tokens.access_token as string}` } })
  t.equal(mcp.status, 401, 'our grant went with the upstream one')
})

t.test('revoking our grant revokes the upstream grant at the provider (in the background)', async t => {
  const h = await startLogin(t)
  const tokens = await loginTokens(h)
  const { tokens: upstream } = await readUpstream(h, tokens.access_token as string)
  t.ok(upstream.refreshToken, 'the IdP gave us a refresh token')
  const res = await fetch(`${h.issuer}/oauth/revoke`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token: tokens.refresh_token as string, client_id: tokens.client_id as string })
  })
  t.equal(res.status, 200, 'local revocation answers at once')
  // Watch the upstream access token at the IdP's userinfo endpoint (reading does not consume it).
  const discovery = await (await fetch(`${h.idp.issuer}/.well-known/openid-configuration`)).json() as { userinfo_endpoint: string }
  const before = await fetch(discovery.userinfo_endpoint, { headers: { authorization: `Bearer ${upstream.accessToken}` } })
  let status = before.status
  for (let i = 0; i < 50 && status === 200; i++) {
    await new Promise(resolve => setTimeout(resolve, 100))
    status = (await fetch(discovery.userinfo_endpoint, { headers: { authorization: `Bearer ${upstream.accessToken}` } })).status
  }
  t.equal(status, 401, 'the upstream access token was revoked at the provider')
  const provider = oidcProvider({ issuer: h.idp.issuer, clientId: 'mcp-proxy', clientSecret: 'proxy-secret-proxy-secret-proxy-secret' })
  const outcome = await provider.refresh(upstream).then(() => 'still valid', (err: { kind?: string }) => err.kind ?? 'error')
  t.equal(outcome, 'invalid_grant', 'the upstream refresh token no longer works')
})
