import t from 'tap'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import Fastify from 'fastify'
import { mcpOAuth } from '../lib/index.js'
import { MemoryStore } from '../lib/storage/memory/index.js'
import { added, type Hashes } from '../lib/storage/memory/records.js'
import { generateId, generateToken, hashToken } from '../lib/oauth/tokens.js'
import { publicClient, storeContract } from './helpers/store-contract.js'

t.test('storage contract: MemoryStore', async t => {
  storeContract(t, async () => new MemoryStore({ sweepIntervalMs: 0 }), { answersNow: true })
})

t.test('a store without one of the combined operations is refused at registration, which names it', async t => {
  for (const method of ['saveGrantWithTokens', 'rotateRefreshTokenWithAccess', 'replayRefreshToken', 'renewClient']) {
    const store = new MemoryStore({ sweepIntervalMs: 0 })
    Object.assign(store, { [method]: undefined })
    const app = Fastify()
    t.teardown(() => app.close())
    await t.rejects(async () => { await app.register(mcpOAuth, { issuer: 'https://as.example.com', resources: ['https://as.example.com/mcp'], store }) },
      { code: 'FST_MCP_OAUTH_INVALID_OPTION', message: new RegExp(`option store: does not implement ${method}$`) }, method)
  }
})

t.test('an access token read after its expiry is dropped at once, not at the next sweep', async t => {
  const T0 = Date.UTC(2026, 0, 1)
  const store = new MemoryStore({ sweepIntervalMs: 0, now: () => T0 })
  t.teardown(() => store.close())
  const grantId = generateId()
  await store.saveGrant({ grantId, userId: 'u', clientId: 'c', scopes: [], resource: 'r', createdAt: T0, expiresAt: T0 + 10_000 })
  const sync = hashToken(generateToken('accessToken'))
  const async = hashToken(generateToken('accessToken'))
  for (const h of [sync, async]) {
    await store.saveAccessToken(h, { grantId, userId: 'u', clientId: 'c', scopes: [], resource: 'r', issuedAt: T0, expiresAt: T0 + 1000 })
  }
  t.equal(store.getAccessTokenNow(sync, T0 + 1000), null)
  t.equal(await store.getAccessToken(async, T0 + 1000), null)
  t.equal((await store.stats()).accessTokens, 0, 'both records are gone')
  t.equal(store.getAccessTokenNow(sync, T0), null, 'and stay gone for an earlier clock')
})

t.test('the sweep visits records by their expiry: what is kept longer, saved again or never expires stays', async t => {
  const T0 = Date.UTC(2026, 0, 1)
  let clock = T0
  const store = new MemoryStore({ sweepIntervalMs: 0, now: () => clock })
  t.teardown(() => store.close())
  const request = { clientId: 'c', redirectUri: 'http://127.0.0.1/cb', codeChallenge: 'x', codeChallengeMethod: 'S256' as const, scopes: [], resource: 'r' }
  const codeRecord = (expiresAt: number) => ({ ...request, grantId: 'g', userId: 'u', issuedAt: T0, expiresAt })
  const flowRecord = (expiresAt: number) => ({ ...request, upstreamVerifier: 'v', browserBinding: 'b', createdAt: T0, expiresAt })
  // A code used before it expires is kept (for replay detection) until retainUntil.
  await store.saveCode('used', codeRecord(T0 + 1000))
  await store.saveCode('unused', codeRecord(T0 + 1000))
  t.equal((await store.consumeCode('used', T0 + 500, T0 + 900_000)).status, 'ok')
  // A grant saved again with a later expiry.
  const grant = { grantId: 'g1', userId: 'u', clientId: 'c', scopes: [], resource: 'r', createdAt: T0, expiresAt: T0 + 1000 }
  await store.saveGrant(grant)
  await store.saveGrant({ ...grant, expiresAt: T0 + 3_600_000 })
  await store.saveFlow('short', flowRecord(T0 + 1000))
  await store.saveFlow('forever', flowRecord(Number.POSITIVE_INFINITY))
  const client = publicClient({ clientId: 'kept', clientIdIssuedAt: T0 })
  await store.saveClient({ ...client, clientId: 'temp', expiresAt: T0 + 1000 })
  await store.saveClient(client)

  clock = T0 + 600_000
  await store.sweep()
  t.same(await store.stats(), { accessTokens: 0, refreshTokens: 0, grants: 1, clients: 1, flows: 1, codes: 1 },
    'gone: the unused code, the short flow, the expired client; kept: the used code, the grant saved again, the flow without end, the client without expiry')
  t.equal((await store.consumeCode('used', clock, clock)).status, 'reused', 'the used code is still remembered')
  clock = T0 + 1_000_000
  await store.sweep()
  t.equal((await store.stats()).codes, 0, 'and forgotten after retainUntil')
  clock = T0 + 4_000_000
  await store.sweep()
  t.same(await store.stats(), { accessTokens: 0, refreshTokens: 0, grants: 0, clients: 1, flows: 1, codes: 0 }, 'the grant at its later expiry')
})

t.test('the sweep reclaims expired records in slices and keeps live ones', async t => {
  let clock = Date.UTC(2026, 0, 1)
  const store = new MemoryStore({ sweepIntervalMs: 0, now: () => clock, sweepSliceMs: 2 })
  t.teardown(() => store.close())
  const N = 50_000
  const live: string[] = []
  for (let i = 0; i < N; i++) {
    const grantId = generateId()
    const expiresAt = clock + (i % 2 === 0 ? 1000 : 3_600_000)
    await store.saveGrant({ grantId, userId: 'u', clientId: 'c', scopes: [], resource: 'r', createdAt: clock, expiresAt })
    const h = hashToken(generateToken('accessToken'))
    await store.saveAccessToken(h, { grantId, userId: 'u', clientId: 'c', scopes: [], resource: 'r', issuedAt: clock, expiresAt })
    await store.saveRefreshToken(hashToken(generateToken('refreshToken')), { grantId, clientId: 'c', scopes: [], issuedAt: clock, expiresAt })
    if (i % 2 === 1) live.push(h)
  }
  t.same(await store.stats(), { accessTokens: N, refreshTokens: N, grants: N, clients: 0, flows: 0, codes: 0 })
  clock += 2000
  const delay = monitorEventLoopDelay({ resolution: 1 })
  delay.enable()
  let ticks = 0
  const ticker = setInterval(() => { ticks++ }, 1)
  await store.sweep()
  clearInterval(ticker)
  delay.disable()
  t.same(await store.stats(), { accessTokens: N / 2, refreshTokens: N / 2, grants: N / 2, clients: 0, flows: 0, codes: 0 })
  t.ok(ticks > 0, 'other work ran while the sweep was in progress')
  for (const h of live.slice(0, 100)) t.ok(await store.getAccessToken(h, clock), 'live token survives')
  t.comment(`sweep of ${N * 3} records; event-loop delay max ${(delay.max / 1e6).toFixed(1)} ms`)
})

t.test('a second sweep call joins the running pass; close stops everything', async t => {
  const store = new MemoryStore({ sweepIntervalMs: 10 })
  const a = store.sweep()
  const b = store.sweep()
  await Promise.all([a, b])
  await store.close()
  await store.sweep()
  t.pass('no timers left after close (tap would hang otherwise)')
})

t.test('saving a token for an unknown grant is a programming error', async t => {
  const store = new MemoryStore({ sweepIntervalMs: 0 })
  t.teardown(() => store.close())
  await t.rejects(store.saveAccessToken('h', { grantId: 'none', userId: 'u', clientId: 'c', scopes: [], resource: 'r', issuedAt: 0, expiresAt: 1 }))
  await t.rejects(store.saveRefreshToken('h', { grantId: 'none', clientId: 'c', scopes: [], issuedAt: 0, expiresAt: 1 }))
})

t.test('compact records: callers get copies, and nothing is lost in the compaction', async t => {
  const store = new MemoryStore({ sweepIntervalMs: 0 })
  t.teardown(() => store.close())
  const now = Date.UTC(2026, 0, 1)
  const grantId = generateId()
  await store.saveGrant({ grantId, userId: 'u', email: 'u@example.com', clientId: 'c', scopes: ['a', 'b'], resource: 'r', createdAt: now, expiresAt: now + 3600_000 })
  const narrowed = hashToken(generateToken('accessToken'))
  await store.saveAccessToken(narrowed, { grantId, userId: 'u', email: 'other@example.com', clientId: 'c', scopes: ['a'], resource: 'r', issuedAt: now, expiresAt: now + 60_000 })
  const joined = hashToken(generateToken('accessToken'))
  await store.saveAccessToken(joined, { grantId, userId: 'u', clientId: 'c', scopes: ['a b'], resource: 'r', issuedAt: now, expiresAt: now + 60_000 })

  const first = await store.getAccessToken(narrowed, now)
  t.same(first?.scopes, ['a'], 'a token whose scopes differ from its grant keeps its own')
  t.equal(first?.email, 'other@example.com', 'and its own e-mail')
  first?.scopes.push('mutated')
  t.same((await store.getAccessToken(narrowed, now))?.scopes, ['a'], 'mutating a returned record changes nothing stored')
  t.same((await store.getAccessToken(joined, now))?.scopes, ['a b'], '["a b"] is not ["a", "b"]')

  await store.saveGrant({ grantId, userId: 'u', clientId: 'c', scopes: ['a', 'b', 'c'], resource: 'r', createdAt: now, expiresAt: now + 3600_000 })
  const again = await store.getAccessToken(narrowed, now)
  t.same(again?.scopes, ['a'], 're-saving the grant keeps its tokens\' fields')
  t.equal(again?.email, 'other@example.com')
  const grant = await store.getGrant(grantId, now)
  grant?.scopes.push('x')
  t.same((await store.getGrant(grantId, now))?.scopes, ['a', 'b', 'c'], 'grants are copies too')
})

t.test('a family list costs a bounded number of lookups per new token, and drops the dead as it grows', async t => {
  /** A record map that counts its lookups. */
  class Counting extends Map<string, unknown> {
    lookups = 0
    override has (key: string): boolean {
      this.lookups++
      return super.has(key)
    }
  }
  const live = new Counting()
  let hashes: Hashes
  for (let i = 0; i < 1000; i++) {
    const h = `live-${i}`
    live.set(h, true)
    hashes = added(hashes, h, live)
  }
  t.equal(Array.isArray(hashes) ? hashes.length : -1, 1000, 'every live member is kept')
  // Pruning at 8, 16, ..., 512: 1016 lookups for 1000 additions; checking every time past 8 was 499,472.
  t.ok(live.lookups <= 2 * 1000, `lookups for 1000 additions to a family whose records all live: ${live.lookups}`)
  t.same(new Set(hashes as string[]).size, 1000, 'no member twice')

  const dead = new Counting()
  let list: Hashes
  let longest = 0
  for (let i = 0; i < 1000; i++) {
    // Only the newest record is alive: its predecessors expired and were swept.
    dead.clear()
    dead.set(`gone-${i}`, true)
    list = added(list, `gone-${i}`, dead)
    longest = Math.max(longest, Array.isArray(list) ? list.length : 1)
  }
  t.ok(longest <= 8, `a family whose old records are gone stays short (longest list ${longest})`)
  t.ok(dead.lookups <= 2 * 1000, `lookups: ${dead.lookups}`)
  t.ok(Array.isArray(list) && list.includes('gone-999'), 'the newest is listed')

  t.equal(added(undefined, 'a', live), 'a', 'the first member is the hash itself')
  t.equal(added('a', 'a', live), 'a', 'the same hash again changes nothing')
  t.same(added('a', 'b', live), ['a', 'b'], 'a second member makes a list, without a lookup')
})

t.test('listing a user\'s or a client\'s grants scans in slices, letting other work run, and misses nothing', async t => {
  const T0 = Date.UTC(2026, 0, 1)
  // A zero slice: the scan yields after every 1024 grants it looks at.
  const store = new MemoryStore({ sweepIntervalMs: 0, sweepSliceMs: 0, now: () => T0 })
  t.teardown(() => store.close())
  const record = (i: number, expiresAt = T0 + 60_000) => ({ grantId: `g${i}`, userId: `u${i % 100}`, clientId: `c${i % 7}`, scopes: [], resource: 'r', createdAt: T0, expiresAt })
  for (let i = 0; i < 10_000; i++) await store.saveGrant(record(i, i % 10 === 0 ? T0 : T0 + 60_000))
  let turns = 0
  let turning = true
  const turn = (): void => { turns++; if (turning) setImmediate(turn) }
  setImmediate(turn)
  const [byUser, byClient] = await Promise.all([store.listGrants({ userId: 'u3' }, T0), store.listGrants({ clientId: 'c2' }, T0)])
  turning = false
  t.ok(turns >= 5, `the event loop turned while listing (${turns} turns)`)
  const expected = (match: (i: number) => boolean) => Array.from({ length: 10_000 }, (_, i) => i).filter(i => match(i) && i % 10 !== 0).map(i => `g${i}`)
  t.same(byUser.sort(), expected(i => i % 100 === 3).sort(), 'every live grant of the user, none expired')
  t.same(byClient.sort(), expected(i => i % 7 === 2).sort(), 'every live grant of the client')

  // Grants added while a scan is under way: those behind the cursor may be missed, nothing breaks.
  const listing = store.listGrants({ userId: 'u3' }, T0)
  await store.saveGrant(record(10_003))
  await store.revokeGrant('g9903')
  const during = await listing
  t.notOk(during.includes('g9903'), 'a grant revoked before the scan reached it is not listed')
  t.ok(during.includes('g10003'), 'one added at the end is')
})
