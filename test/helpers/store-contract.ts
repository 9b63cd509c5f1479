import type { Test } from 'tap'
import type { ClientRecord, CodeRecord, GrantRecord, Store } from '../../lib/storage/contract.js'
import { OPTIONAL_STORE_METHODS, STORE_METHODS } from '../../lib/storage/contract.js'
import { GrantRevokedError } from '../../lib/errors.js'
import { generateId, generateToken, hashToken } from '../../lib/oauth/tokens.js'

/**
 * The storage contract, as tests. Every store implementation runs this suite; `make` returns a
 * fresh, empty store (it is closed at the end of each subtest).
 */
/** A public (no secret) client record as dynamic registration makes it; tests change what they need. */
export function publicClient (over: Partial<ClientRecord> = {}): ClientRecord {
  return {
    clientId: 'c-' + generateId(),
    redirectUris: ['http://127.0.0.1/cb'],
    tokenEndpointAuthMethod: 'none',
    grantTypes: ['authorization_code'],
    responseTypes: ['code'],
    applicationType: 'native',
    metadata: {},
    clientIdIssuedAt: 0,
    source: 'dcr',
    ...over
  }
}

export function storeContract (t: Test, make: () => Promise<Store>, { answersNow = false }: {
  /** `getAccessTokenNow` never answers undefined (a store that holds everything in process). */
  answersNow?: boolean
} = {}): void {
  const T0 = Date.UTC(2026, 0, 1)
  const HOUR = 3_600_000

  async function fresh (tt: Test): Promise<Store> {
    const store = await make()
    tt.teardown(async () => { await store.close?.() })
    return store
  }

  function grant (over: Partial<GrantRecord> = {}): GrantRecord {
    return {
      grantId: generateId(),
      userId: 'user-1',
      email: 'u@example.com',
      clientId: 'client-1',
      scopes: ['mcp:tools'],
      resource: 'https://rs.example.com/mcp',
      createdAt: T0,
      expiresAt: T0 + 24 * HOUR,
      ...over
    }
  }

  function access (g: GrantRecord, expiresAt = T0 + HOUR) {
    return { grantId: g.grantId, clientId: g.clientId, userId: g.userId, scopes: g.scopes, resource: g.resource, issuedAt: T0, expiresAt }
  }

  function refresh (g: GrantRecord, expiresAt = T0 + 12 * HOUR) {
    return { grantId: g.grantId, clientId: g.clientId, scopes: g.scopes, issuedAt: T0, expiresAt }
  }

  t.test('has every method of the contract (the plugin checks the list at registration), the optional ones too', async t => {
    const store = await fresh(t)
    for (const method of [...STORE_METHODS, ...OPTIONAL_STORE_METHODS]) t.type(store[method], 'function', method)
  })

  t.test('grants: save, get, expire, update upstream', async t => {
    const store = await fresh(t)
    const g = grant({ upstream: 'blob-1' })
    await store.saveGrant(g)
    t.same(await store.getGrant(g.grantId, T0), g)
    t.equal(await store.getGrant('nope', T0), null)
    t.equal(await store.updateGrantUpstream(g.grantId, 'blob-2', T0), true)
    t.equal((await store.getGrant(g.grantId, T0))?.upstream, 'blob-2')
    t.equal(await store.updateGrantUpstream('nope', 'x', T0), false)
    t.equal(await store.getGrant(g.grantId, g.expiresAt), null, 'gone at its expiry')
    t.equal(await store.updateGrantUpstream(g.grantId, 'blob-3', g.expiresAt), false)
  })

  t.test('access tokens: save, get by hash, expiry boundary, delete', async t => {
    const store = await fresh(t)
    const g = grant()
    await store.saveGrant(g)
    const h = hashToken(generateToken('accessToken'))
    await store.saveAccessToken(h, access(g))
    t.same(await store.getAccessToken(h, T0), access(g))
    t.same(await store.getAccessToken(h, T0 + HOUR - 1), access(g), 'valid until the last millisecond')
    t.equal(await store.getAccessToken(h, T0 + HOUR), null, 'expired at expiresAt')
    const h2 = hashToken(generateToken('accessToken'))
    await store.saveAccessToken(h2, access(g))
    t.equal(await store.deleteAccessToken(h2), true)
    t.equal(await store.deleteAccessToken(h2), false)
    t.equal(await store.getAccessToken(h2, T0), null)
    t.equal(await store.getAccessToken(hashToken('never-issued'), T0), null)
    // The optional in-process lookup answers as the promise one does, or (undefined) not at all.
    if (store.getAccessTokenNow !== undefined) {
      const h3 = hashToken(generateToken('accessToken'))
      await store.saveAccessToken(h3, access(g))
      // A store that caches what it read may keep the record from here on.
      t.same(await store.getAccessToken(h3, T0), access(g))
      const now = (at: number) => {
        const answer = store.getAccessTokenNow?.(h3, at)
        if (answer === undefined && answersNow) t.fail('getAccessTokenNow: this store always answers')
        return answer
      }
      const first = now(T0 + HOUR - 1)
      if (first !== undefined) t.same(first, access(g), 'getAccessTokenNow: same record')
      const copy = now(T0)
      if (copy != null) {
        copy.scopes.push('injected')
        t.same(now(T0) ?? access(g), access(g), 'getAccessTokenNow: a copy, the stored record untouched')
        t.same(await store.getAccessToken(h3, T0), access(g), 'getAccessToken: untouched too')
      }
      t.ok(store.getAccessTokenNow(h2, T0) == null, 'getAccessTokenNow: deleted')
      t.ok(store.getAccessTokenNow(hashToken('never-issued'), T0) == null, 'getAccessTokenNow: never issued')
      t.ok(now(T0 + HOUR) == null, 'getAccessTokenNow: expired at expiresAt')
      t.equal(await store.getAccessToken(h3, T0 + HOUR), null, 'getAccessToken: expired too')
    }
  })

  t.test('saveGrantWithTokens: the grant and both tokens, as the three saves would store them', async t => {
    const store = await fresh(t)
    const g = grant({ upstream: 'blob' })
    const a = hashToken(generateToken('accessToken'))
    const r = hashToken(generateToken('refreshToken'))
    await store.saveGrantWithTokens(g, { hash: a, token: access(g) }, { hash: r, token: refresh(g) })
    t.same(await store.getGrant(g.grantId, T0), g)
    t.same(await store.getAccessToken(a, T0), access(g))
    t.same(await store.getRefreshToken(r, T0), refresh(g))
    t.equal(await store.revokeGrant(g.grantId), true)
    t.equal(await store.getAccessToken(a, T0), null, 'the tokens are the grant\'s family: revoked with it')
    t.equal(await store.getRefreshToken(r, T0), null)
  })

  t.test('saveGrantWithTokens without a refresh token: a machine grant and its access token keep subjectType', async t => {
    const store = await fresh(t)
    const { email: _e, ...rest } = grant({ userId: 'machine-1', clientId: 'machine-1', subjectType: 'client', expiresAt: T0 + HOUR })
    const g: GrantRecord = rest
    const a = hashToken(generateToken('accessToken'))
    const token = { ...access(g), subjectType: 'client' as const }
    await store.saveGrantWithTokens(g, { hash: a, token })
    t.same(await store.getGrant(g.grantId, T0), g, 'the grant, subjectType included')
    t.same(await store.getAccessToken(a, T0), token, 'the access token, subjectType included')
    const now = store.getAccessTokenNow?.(a, T0)
    if (now !== undefined) t.same(now, token, 'getAccessTokenNow: subjectType included')
    else if (answersNow) t.fail('getAccessTokenNow: this store always answers')
    t.same(await store.listGrants({ clientId: 'machine-1' }, T0), [g.grantId])
    t.equal(await store.getAccessToken(a, T0 + HOUR), null, 'ends with the grant')
    t.equal(await store.revokeGrant(g.grantId), true)
    t.equal(await store.getAccessToken(a, T0), null, 'revoked with its grant')
  })

  t.test('rotateRefreshTokenWithAccess: the access token is saved exactly when the rotation happens', async t => {
    const store = await fresh(t)
    const g = grant()
    await store.saveGrant(g)
    const h1 = hashToken(generateToken('refreshToken'))
    await store.saveRefreshToken(h1, refresh(g))
    const a1 = hashToken(generateToken('accessToken'))
    const h2 = hashToken(generateToken('refreshToken'))
    const won = await store.rotateRefreshTokenWithAccess(h1, { hash: h2, token: refresh(g) }, { hash: a1, token: access(g) }, T0 + 1000, 'info')
    t.equal(won.status, 'rotated')
    t.same(await store.getAccessToken(a1, T0 + 1000), access(g), 'saved with the rotation')
    t.equal((await store.getRefreshToken(h1, T0 + 1000))?.successor, 'info')
    const a2 = hashToken(generateToken('accessToken'))
    const lost = await store.rotateRefreshTokenWithAccess(h1, { hash: hashToken('other'), token: refresh(g) }, { hash: a2, token: access(g) }, T0 + 2000)
    t.equal(lost.status, 'already_rotated')
    t.equal(await store.getAccessToken(a2, T0 + 2000), null, 'a lost race leaves no access token')
    const a3 = hashToken(generateToken('accessToken'))
    const unknown = await store.rotateRefreshTokenWithAccess(hashToken('nope'), { hash: hashToken('x'), token: refresh(g) }, { hash: a3, token: access(g) }, T0)
    t.equal(unknown.status, 'unknown')
    t.equal(await store.getAccessToken(a3, T0), null)
    t.equal(await store.revokeGrant(g.grantId), true)
    t.equal(await store.getAccessToken(a1, T0 + 1000), null, 'the access token joined the family')
  })

  t.test('refresh rotation is compare-and-swap', async t => {
    const store = await fresh(t)
    const g = grant()
    await store.saveGrant(g)
    const h1 = hashToken(generateToken('refreshToken'))
    await store.saveRefreshToken(h1, refresh(g))
    const h2 = hashToken(generateToken('refreshToken'))
    const r1 = await store.rotateRefreshToken(h1, { hash: h2, token: refresh(g) }, T0 + 1000, 'successor-info')
    t.equal(r1.status, 'rotated')
    const again = await store.rotateRefreshToken(h1, { hash: hashToken('other'), token: refresh(g) }, T0 + 2000)
    t.equal(again.status, 'already_rotated')
    if (again.status === 'already_rotated') {
      t.equal(again.previous.rotatedAt, T0 + 1000)
      t.equal(again.previous.successor, 'successor-info')
    }
    t.equal(await store.getRefreshToken(hashToken('other'), T0), null, 'the losing successor was not stored')
    const old = await store.getRefreshToken(h1, T0 + 2000)
    t.equal(old?.rotatedAt, T0 + 1000, 'rotated tokens stay visible for reuse detection')
    t.same(await store.getRefreshToken(h2, T0 + 2000), refresh(g))
    t.same(await store.rotateRefreshToken(hashToken('unknown'), { hash: hashToken('x'), token: refresh(g) }, T0), { status: 'unknown' })
    t.same(await store.rotateRefreshToken(h2, { hash: hashToken('y'), token: refresh(g) }, T0 + 12 * HOUR), { status: 'unknown' }, 'expired')
  })

  t.test('successor data: kept only until successorUntil, replays counted once each, gone with the family', async t => {
    const store = await fresh(t)
    const g = grant()
    await store.saveGrant(g)
    const h1 = hashToken(generateToken('refreshToken'))
    await store.saveRefreshToken(h1, refresh(g))
    const now = T0 + 1000
    // Redis keeps it by a key TTL (real time), the memory store by the caller's clock: both move on here.
    const WINDOW = 150
    t.equal((await store.rotateRefreshToken(h1, { hash: hashToken(generateToken('refreshToken')), token: refresh(g) }, now, 'salt scope', now + WINDOW)).status, 'rotated')
    t.equal((await store.getRefreshToken(h1, now))?.successor, 'salt scope', 'kept within the window')
    const lost = await store.rotateRefreshToken(h1, { hash: hashToken('other'), token: refresh(g) }, now + 1)
    t.equal(lost.status === 'already_rotated' ? lost.previous.successor : undefined, 'salt scope', 'a losing rotation sees it too')
    t.same(await store.replayRefreshToken(h1, now), { successor: 'salt scope', replays: 1 })
    const racing = await Promise.all(Array.from({ length: 10 }, () => store.replayRefreshToken(h1, now)))
    t.same(racing.map(r => r?.replays).sort((a, b) => (a ?? 0) - (b ?? 0)), [2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 'concurrent replays each get their own count')
    t.equal(await store.replayRefreshToken(hashToken('never-issued'), now), null)
    await new Promise(resolve => setTimeout(resolve, WINDOW + 50))
    const after = await store.getRefreshToken(h1, now + WINDOW + 50)
    t.equal(after?.rotatedAt, now, 'past the window the token still serves reuse detection')
    t.equal(after?.successor, undefined, 'but its successor data is gone')
    t.equal(await store.replayRefreshToken(h1, now + WINDOW + 50), null, 'no replay past the window')

    const h2 = hashToken(generateToken('refreshToken'))
    await store.saveRefreshToken(h2, refresh(g))
    await store.rotateRefreshToken(h2, { hash: hashToken(generateToken('refreshToken')), token: refresh(g) }, now, 'kept', now + HOUR)
    const h3 = hashToken(generateToken('refreshToken'))
    await store.saveRefreshToken(h3, refresh(g))
    t.equal(await store.replayRefreshToken(h3, now), null, 'a token never rotated is no replay')
    t.equal(await store.revokeGrant(g.grantId), true)
    t.equal(await store.getRefreshToken(h2, now), null)
    t.equal(await store.replayRefreshToken(h2, now), null, 'nothing replays once the family is revoked')
  })

  t.test('a reused code revokes its grant id in advance: the grant cannot be written until the retention ends', async t => {
    const store = await fresh(t)
    const g = grant()
    const code: CodeRecord = {
      clientId: g.clientId,
      redirectUri: 'http://127.0.0.1/cb',
      codeChallenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
      codeChallengeMethod: 'S256',
      scopes: g.scopes,
      resource: g.resource,
      grantId: g.grantId,
      userId: g.userId,
      issuedAt: T0,
      expiresAt: T0 + 100
    }
    const h = hashToken(generateToken('authorizationCode'))
    await store.saveCode(h, code)
    t.equal((await store.consumeCode(h, T0 + 10, T0 + 150)).status, 'ok')
    const other = grant({ userId: 'user-2' })
    await store.saveGrant(other)
    t.same(await store.getGrant(other.grantId, T0), other, 'a consumed (not replayed) code blocks nothing')
    t.equal((await store.consumeCode(h, T0 + 20, T0 + 150)).status, 'reused')
    const early = { ...g, createdAt: T0 + 30 }
    await t.rejects(store.saveGrant(early), GrantRevokedError, 'saveGrant refuses the id')
    const a = hashToken(generateToken('accessToken'))
    const r = hashToken(generateToken('refreshToken'))
    await t.rejects(store.saveGrantWithTokens(early, { hash: a, token: access(g) }, { hash: r, token: refresh(g) }), GrantRevokedError, 'saveGrantWithTokens too')
    t.equal(await store.getAccessToken(a, T0 + 30), null, 'and writes none of its tokens')
    t.equal(await store.getRefreshToken(r, T0 + 30), null)
    t.equal(await store.getGrant(g.grantId, T0 + 30), null, 'no grant was written')
    t.same(await store.listGrants({ userId: g.userId }, T0 + 30), [], 'nor indexed')
    // Past the retention (real time for Redis's key TTL, the grant's own date for the memory store).
    await new Promise(resolve => setTimeout(resolve, 200))
    const late = { ...g, createdAt: T0 + 200 }
    await store.saveGrant(late)
    t.same(await store.getGrant(g.grantId, T0 + 200), late, 'the id is free again once the retention is over')
  })

  t.test('concurrent rotations of one token: exactly one wins', async t => {
    const store = await fresh(t)
    const g = grant()
    await store.saveGrant(g)
    const h = hashToken(generateToken('refreshToken'))
    await store.saveRefreshToken(h, refresh(g))
    const results = await Promise.all(Array.from({ length: 20 }, () =>
      store.rotateRefreshToken(h, { hash: hashToken(generateToken('refreshToken')), token: refresh(g) }, T0 + 1)))
    t.equal(results.filter(r => r.status === 'rotated').length, 1)
    t.equal(results.filter(r => r.status === 'already_rotated').length, 19)
  })

  t.test('revokeGrant removes the whole family', async t => {
    const store = await fresh(t)
    const g = grant()
    const other = grant()
    await store.saveGrant(g)
    await store.saveGrant(other)
    const a = hashToken(generateToken('accessToken'))
    const b = hashToken(generateToken('accessToken'))
    const r = hashToken(generateToken('refreshToken'))
    const r2 = hashToken(generateToken('refreshToken'))
    const keep = hashToken(generateToken('accessToken'))
    await store.saveAccessToken(a, access(g))
    await store.saveAccessToken(b, access(g))
    await store.saveRefreshToken(r, refresh(g))
    await store.rotateRefreshToken(r, { hash: r2, token: refresh(g) }, T0 + 1)
    await store.saveAccessToken(keep, access(other))
    t.equal(await store.revokeGrant(g.grantId), true)
    t.equal(await store.revokeGrant(g.grantId), false, 'second revocation finds nothing')
    for (const h of [a, b]) t.equal(await store.getAccessToken(h, T0), null)
    for (const h of [r, r2]) t.equal(await store.getRefreshToken(h, T0), null)
    t.equal(await store.getGrant(g.grantId, T0), null)
    t.ok(await store.getAccessToken(keep, T0), 'other grants untouched')
    t.same(await store.rotateRefreshToken(r2, { hash: hashToken('z'), token: refresh(g) }, T0 + 2), { status: 'unknown' })
  })

  t.test('listGrants by user and by client', async t => {
    const store = await fresh(t)
    const a = grant({ userId: 'alice', clientId: 'c1' })
    const b = grant({ userId: 'alice', clientId: 'c2' })
    const c = grant({ userId: 'bob', clientId: 'c1' })
    for (const g of [a, b, c]) await store.saveGrant(g)
    t.same((await store.listGrants({ userId: 'alice' }, T0)).sort(), [a.grantId, b.grantId].sort())
    t.same((await store.listGrants({ clientId: 'c1' }, T0)).sort(), [a.grantId, c.grantId].sort())
    t.same(await store.listGrants({ userId: 'nobody' }, T0), [])
    t.same(await store.listGrants({ userId: 'alice' }, a.expiresAt), [], 'expired grants are not listed')
  })

  t.test('clients: save, get, delete, expiry', async t => {
    const store = await fresh(t)
    const client = {
      clientId: 'c-' + generateId(),
      redirectUris: ['http://127.0.0.1/cb'],
      tokenEndpointAuthMethod: 'none' as const,
      grantTypes: ['authorization_code', 'refresh_token'],
      responseTypes: ['code'],
      applicationType: 'native' as const,
      clientName: 'Test',
      metadata: { client_uri: 'https://example.com' },
      clientIdIssuedAt: T0 / 1000,
      source: 'dcr' as const,
      expiresAt: T0 + HOUR
    }
    await store.saveClient(client)
    t.same(await store.getClient(client.clientId, T0), client)
    t.equal(await store.getClient(client.clientId, T0 + HOUR), null, 'expired client is gone')
    await store.saveClient({ ...client, expiresAt: undefined })
    t.equal(await store.deleteClient(client.clientId), true)
    t.equal(await store.deleteClient(client.clientId), false)
    t.equal(await store.getClient(client.clientId, T0), null)
  })

  t.test('clients counted per registering address', async t => {
    const store = await fresh(t)
    const base = publicClient({ redirectUris: ['https://a.example.com/cb'], applicationType: 'web', clientIdIssuedAt: T0 / 1000 })
    await store.saveClient({ ...base, clientId: 'a1', registeredFrom: '192.0.2.1' })
    await store.saveClient({ ...base, clientId: 'a2', registeredFrom: '192.0.2.1', expiresAt: T0 + HOUR })
    await store.saveClient({ ...base, clientId: 'b1', registeredFrom: '2001:db8::1' })
    await store.saveClient({ ...base, clientId: 'static' })
    t.equal(await store.countClientsFrom('192.0.2.1', T0), 2)
    t.equal(await store.countClientsFrom('2001:db8::1', T0), 1)
    t.equal(await store.countClientsFrom('198.51.100.7', T0), 0)
    await store.deleteClient('a1')
    t.equal(await store.countClientsFrom('192.0.2.1', T0), 1)
    await store.saveClient({ ...base, clientId: 'b1', registeredFrom: '192.0.2.1' })
    t.equal(await store.countClientsFrom('2001:db8::1', T0), 0, 'a re-saved client moves with its address')
    t.equal(await store.countClientsFrom('192.0.2.1', T0), 2)
    t.equal(await store.countClientsFrom('192.0.2.1', T0 + HOUR), 1, 'expired clients do not count')
  })

  t.test('clients: a use renews the expiry, never shortens it, never loses an update', async t => {
    const store = await fresh(t)
    const renew = store.renewClient.bind(store)
    const client = publicClient({ clientName: 'Renewed', registeredFrom: '192.0.2.9', expiresAt: T0 + HOUR })
    await store.saveClient(client)
    t.equal(await renew(client.clientId, T0 + 3 * HOUR, T0), true)
    t.same(await store.getClient(client.clientId, T0 + 2 * HOUR), { ...client, expiresAt: T0 + 3 * HOUR }, 'lives on past its old expiry, otherwise unchanged')
    t.equal(await store.countClientsFrom('192.0.2.9', T0 + 2 * HOUR), 1, 'and still counts for its address')
    t.equal(await renew(client.clientId, T0 + 2 * HOUR, T0), true, 'an earlier expiry...')
    t.equal((await store.getClient(client.clientId, T0))?.expiresAt, T0 + 3 * HOUR, '...is not taken')
    await store.saveClient({ ...client, clientName: 'Updated', expiresAt: T0 + 3 * HOUR })
    t.equal(await renew(client.clientId, T0 + 4 * HOUR, T0 + HOUR), true)
    t.same(await store.getClient(client.clientId, T0 + HOUR), { ...client, clientName: 'Updated', expiresAt: T0 + 4 * HOUR }, 'an update saved before stays')
    t.equal(await renew(client.clientId, T0 + 9 * HOUR, T0 + 4 * HOUR), false, 'expired: not brought back')
    t.equal(await store.getClient(client.clientId, T0 + 4 * HOUR), null)
    t.equal(await renew('c-unknown', T0 + HOUR, T0), false, 'unknown client')

    const forever = publicClient()
    await store.saveClient(forever)
    t.equal(await renew(forever.clientId, T0 + HOUR, T0), true)
    t.equal((await store.getClient(forever.clientId, T0))?.expiresAt, T0 + HOUR, 'a client without an expiry gets one')
    t.equal(await store.getClient(forever.clientId, T0 + HOUR), null)
  })

  t.test('locks: one holder, released only by its owner, expire by themselves', async t => {
    const store = await fresh(t)
    if (store.acquireLock === undefined || store.releaseLock === undefined) {
      t.pass('this store offers no locks (single-process single flight only)')
      return
    }
    const owner = await store.acquireLock('k', 60_000)
    t.type(owner, 'string')
    const racers = await Promise.all([store.acquireLock('k', 60_000), store.acquireLock('k', 60_000)])
    t.same(racers, [null, null], 'held')
    t.type(await store.acquireLock('other', 60_000), 'string', 'keys are independent')
    await store.releaseLock('k', 'not-the-owner')
    t.equal(await store.acquireLock('k', 60_000), null, 'a stranger cannot release it')
    await store.releaseLock('k', owner as string)
    const next = await store.acquireLock('k', 40)
    t.type(next, 'string', 'free again after release')
    await new Promise(resolve => setTimeout(resolve, 80))
    t.type(await store.acquireLock('k', 60_000), 'string', 'a lease ends by itself')
  })

  t.test('flows are take-once and expire', async t => {
    const store = await fresh(t)
    const flow = {
      clientId: 'c1',
      redirectUri: 'http://127.0.0.1/cb',
      state: 'xyz',
      codeChallenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
      codeChallengeMethod: 'S256' as const,
      scopes: ['mcp:tools'],
      resource: 'https://rs.example.com/mcp',
      upstreamVerifier: 'v',
      upstreamNonce: 'n',
      browserBinding: 'b',
      createdAt: T0,
      expiresAt: T0 + 600_000
    }
    await store.saveFlow('k1', flow)
    const taken = await Promise.all([store.takeFlow('k1', T0), store.takeFlow('k1', T0), store.takeFlow('k1', T0)])
    t.equal(taken.filter(x => x !== null).length, 1, 'one taker among concurrent takers')
    t.same(taken.find(x => x !== null), flow)
    await store.saveFlow('k2', flow)
    t.equal(await store.takeFlow('k2', T0 + 600_000), null, 'expired flow cannot be taken')
    t.equal(await store.takeFlow('k2', T0), null, 'and it is gone')
  })

  t.test('codes: consumed once, then reported as reused, then forgotten', async t => {
    const store = await fresh(t)
    const code = {
      clientId: 'c1',
      redirectUri: 'http://127.0.0.1/cb',
      codeChallenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
      codeChallengeMethod: 'S256' as const,
      scopes: ['mcp:tools'],
      resource: 'https://rs.example.com/mcp',
      grantId: 'g1',
      userId: 'u1',
      issuedAt: T0,
      expiresAt: T0 + 60_000
    }
    const h = hashToken(generateToken('authorizationCode'))
    await store.saveCode(h, code)
    const results = await Promise.all(Array.from({ length: 5 }, () => store.consumeCode(h, T0 + 10, T0 + HOUR)))
    t.equal(results.filter(r => r.status === 'ok').length, 1, 'exactly one consumer')
    t.equal(results.filter(r => r.status === 'reused').length, 4)
    const later = await store.consumeCode(h, T0 + HOUR - 1, T0 + 2 * HOUR)
    t.equal(later.status, 'reused', 'reuse still detected after the code expired')
    if (later.status === 'reused') t.equal(later.code.grantId, 'g1')
    t.same(await store.consumeCode(h, T0 + HOUR, T0 + 2 * HOUR), { status: 'unknown' }, 'forgotten after retainUntil')
    const h2 = hashToken(generateToken('authorizationCode'))
    await store.saveCode(h2, code)
    t.same(await store.consumeCode(h2, T0 + 60_000, T0 + HOUR), { status: 'unknown' }, 'an expired code cannot be consumed')
    t.same(await store.consumeCode(hashToken('x'), T0, T0), { status: 'unknown' })
  })

  t.test('assertion ids: one use wins, also concurrently; remembered until the assertion expires', async t => {
    const store = await fresh(t)
    const key = hashToken('https://idp.example.com\u0000' + generateId())
    const first = await Promise.all(Array.from({ length: 8 }, () => store.consumeAssertionId(key, T0 + 150, T0)))
    t.equal(first.filter(Boolean).length, 1, 'exactly one of eight concurrent uses wins')
    t.equal(await store.consumeAssertionId(key, T0 + 150, T0 + 100), false, 'a replay before the expiry is refused')
    t.equal(await store.consumeAssertionId(hashToken('other'), T0 + 150, T0), true, 'another id is its own')
    // A store with its own clock (Redis key expiry) forgets in real time; the memory store by `now`.
    await new Promise(resolve => setTimeout(resolve, 300))
    t.equal(await store.consumeAssertionId(key, T0 + 10_000, T0 + 400), true, 'forgotten once the assertion has expired')
    t.equal(await store.consumeAssertionId(key, T0 + 10_000, T0 + 500), false)
  })
}
