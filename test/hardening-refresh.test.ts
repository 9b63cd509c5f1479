import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { buildApp, RESOURCE, type TestApp } from './helpers/app.js'
import { CODE_VERIFIER as VERIFIER, pauseAt, storeCode } from './helpers/codes.js'
import { hashToken } from '../lib/oauth/tokens.js'
import { MemoryStore } from '../lib/storage/memory/index.js'
import type { Store } from '../lib/storage/contract.js'

/**
 * Issue 15, findings 1 and 10 and the refresh grace, on the memory store (the Redis side is in
 * hardening-refresh-redis.test.ts): what an attacker holding a retired refresh token and a dump of
 * the store can compute, how long and how often a retired token is replayed, and a code replayed
 * while its first exchange is still writing the grant.
 */

const CLIENT = { client_id: 'app', redirect_uris: ['http://127.0.0.1/cb'] }
const SHORT = { client_id: 'short-grace', redirect_uris: ['http://127.0.0.1/cb'], refresh_grace_seconds: 5 }
const SECRET = 'deployment-secret-deployment-secret-0123'

/** The successor derivation before the fix (unkeyed), as an attacker who read the source computes it. */
function unkeyedSuccessor (refreshToken: string, salt: string): { access: string, refresh: string } {
  const out = createHash('sha512').update('\0\0\0\x01' + refreshToken + 'mcp-oauth refresh successor v2\0' + salt).digest()
  return { access: 'mcpat_' + out.toString('base64url', 0, 32), refresh: 'mcprt_' + out.toString('base64url', 32, 64) }
}

/** The same with a key the attacker guessed (a keyed construction, but not the deployment's key). */
function guessedKeySuccessor (refreshToken: string, salt: string): string[] {
  const out: string[] = []
  for (const alg of ['sha256', 'sha512']) {
    const d = createHash(alg).update(randomBytes(32)).update(refreshToken + salt).digest('base64url')
    out.push('mcprt_' + d.slice(0, 43))
  }
  return out
}

/** Every 22-character salt in a piece of stored data ("<salt> <scope>" as the store keeps it). */
function saltsIn (text: string): string[] {
  return [...text.matchAll(/(?<![A-Za-z0-9_-])([A-Za-z0-9_-]{22}) mcp:/g)].map(m => m[1] as string)
}

async function token (ctx: TestApp, body: Record<string, string>) {
  const res = await ctx.app.inject({ method: 'POST', url: '/oauth/token', payload: body })
  return { status: res.statusCode, body: res.json() as Record<string, string> }
}

function refresh (ctx: TestApp, refreshToken: string, clientId = CLIENT.client_id) {
  return token(ctx, { grant_type: 'refresh_token', refresh_token: refreshToken, client_id: clientId })
}

async function call (ctx: TestApp, accessToken: string): Promise<number> {
  return (await ctx.app.inject({ method: 'POST', url: '/mcp', headers: { authorization: `Bearer ${accessToken}` } })).statusCode
}

async function issue (ctx: TestApp, clientId = CLIENT.client_id) {
  return (await ctx.app.mcpOAuth.grants.createGrantWithTokens({ userId: 'u-1', clientId, scopes: ['mcp:tools'], resource: RESOURCE })).tokens
}

t.test('finding 1: a retired refresh token plus what the store holds does not give the live pair', async t => {
  const ctx = await buildApp(t, { clients: [CLIENT], secret: SECRET, refreshGraceSeconds: 60 })
  const store = ctx.app.mcpOAuth.storage
  const rt0 = (await issue(ctx)).refresh_token
  const first = await refresh(ctx, rt0)
  t.equal(first.status, 200)
  ctx.clock.advance(1000)
  const second = await refresh(ctx, first.body.refresh_token as string)
  t.equal(second.status, 200)
  const live = second.body.refresh_token as string

  // Inside the grace window the salt is kept (the grace replay needs it), but without the
  // deployment key it is useless: neither the old construction nor a guessed key gives the pair.
  const inWindow = await store.getRefreshToken(hashToken(first.body.refresh_token as string), ctx.clock.now())
  t.ok(inWindow?.successor, 'within the window the store keeps the salt (for the grace replay)')
  for (const salt of saltsIn(inWindow?.successor ?? '')) {
    const walked = unkeyedSuccessor(first.body.refresh_token as string, salt)
    t.not(walked.refresh, live, 'the unkeyed construction does not give the live refresh token')
    t.not(walked.access, second.body.access_token, 'nor its access token')
    t.notOk(guessedKeySuccessor(first.body.refresh_token as string, salt).includes(live), 'nor a guessed key')
  }

  // After the window: walk the chain from the oldest token, as far as the store lets one.
  ctx.clock.advance(61_000)
  let current = rt0
  const walked: string[] = []
  for (let step = 0; step < 5; step++) {
    const record = await store.getRefreshToken(hashToken(current), ctx.clock.now())
    const salt = saltsIn(record?.successor ?? '')[0]
    if (salt === undefined) break
    current = unkeyedSuccessor(current, salt).refresh
    walked.push(current)
  }
  t.same(walked, [], 'past the window the store has no salt for any retired token')
  t.notOk(walked.includes(live), 'the live refresh token was not computed')
  t.equal((await refresh(ctx, live)).status, 200, 'the live pair still works for its holder')
})

t.test('finding 1: without a shared secret a replay on another instance is refused, never answered with a pair that does not exist', async t => {
  const events: string[] = []
  for (const [label, secretA, secretB] of [['no secret', undefined, undefined], ['different secrets', SECRET, SECRET.replace('0', '1')]] as const) {
    const store = new MemoryStore({ sweepIntervalMs: 0 })
    const base = { clients: [CLIENT], store, auditSink: (e: string) => { events.push(e) } }
    const a = await buildApp(t, { ...base, ...(secretA !== undefined ? { secret: secretA } : {}) })
    const b = await buildApp(t, { ...base, ...(secretB !== undefined ? { secret: secretB } : {}) })
    const rt0 = (await issue(a)).refresh_token
    const first = await refresh(a, rt0)
    t.equal(first.status, 200)
    const replay = await refresh(b, rt0)
    t.equal(replay.status, 400, `${label}: the other instance cannot rebuild the pair`)
    t.equal(replay.body.error, 'invalid_grant')
    t.match(replay.body.error_description, /secret/, 'and says why')
    t.equal(await call(a, first.body.access_token as string), 200, `${label}: the family is not revoked`)
    t.equal((await refresh(a, rt0)).body.refresh_token, first.body.refresh_token, 'the instance that rotated still replays it')
    t.equal((await refresh(b, first.body.refresh_token as string)).status, 200, 'and the live token works everywhere')
  }
  t.notOk(events.includes('refresh_reuse'), 'no reuse was reported')

  const store = new MemoryStore({ sweepIntervalMs: 0 })
  const a = await buildApp(t, { clients: [CLIENT], store, secret: SECRET })
  const b = await buildApp(t, { clients: [CLIENT], store, secret: SECRET })
  const rt0 = (await issue(a)).refresh_token
  const first = await refresh(a, rt0)
  t.same((await refresh(b, rt0)).body, first.body, 'with the same secret, the other instance replays the same pair')
})

t.test('grace: a replay 45 s after the rotation gets the same pair by default; 61 s after, it is reuse', async t => {
  const events: string[] = []
  const ctx = await buildApp(t, { clients: [CLIENT], auditSink: e => { events.push(e) } })
  const rt0 = (await issue(ctx)).refresh_token
  const a = await refresh(ctx, rt0)
  ctx.clock.advance(45_000)
  const b = await refresh(ctx, rt0)
  t.equal(b.status, 200)
  t.equal(b.body.refresh_token, a.body.refresh_token, 'the same pair')
  t.equal(b.body.access_token, a.body.access_token)
  t.equal(b.body.expires_in, 3600 - 45)
  ctx.clock.advance(16_000)
  const late = await refresh(ctx, rt0)
  t.equal(late.body.error, 'invalid_grant')
  t.equal(await call(ctx, a.body.access_token as string), 401, 'past the window the family is revoked')
  t.ok(events.includes('refresh_reuse'))
})

t.test('grace: replays of one retired token are capped (refreshGraceMaxReplays); past the cap it is reuse', async t => {
  const events: string[] = []
  const ctx = await buildApp(t, { clients: [CLIENT], refreshGraceMaxReplays: 3, auditSink: e => { events.push(e) } })
  const rt0 = (await issue(ctx)).refresh_token
  const a = await refresh(ctx, rt0)
  for (let i = 1; i <= 3; i++) {
    ctx.clock.advance(1000)
    const r = await refresh(ctx, rt0)
    t.equal(r.body.refresh_token, a.body.refresh_token, `replay ${i}: the same pair`)
  }
  const over = await refresh(ctx, rt0)
  t.equal(over.status, 400)
  t.equal(over.body.error, 'invalid_grant')
  t.equal(await call(ctx, a.body.access_token as string), 401, 'the family is revoked')
  t.equal((await refresh(ctx, a.body.refresh_token as string)).body.error, 'invalid_grant')
  t.ok(events.includes('refresh_reuse'), 'audited as reuse')

  // Concurrent: a burst of 52 requests with one token, default cap 50: one rotation, fifty replays,
  // then reuse; never two successors.
  const burst = await buildApp(t, { clients: [CLIENT] })
  const rt = (await issue(burst)).refresh_token
  const results = await Promise.all(Array.from({ length: 52 }, () => refresh(burst, rt)))
  t.notOk(results.some(r => r.status >= 500))
  const ok = results.filter(r => r.status === 200)
  t.ok(ok.length <= 51, `at most the rotation and fifty replays succeed (${ok.length})`)
  t.ok(new Set(ok.map(r => r.body.refresh_token)).size <= 1, 'one successor')
  t.ok(results.some(r => r.body.error === 'invalid_grant'), 'the fifty-second is reuse')
})

t.test('grace: a static client\'s own window (clients[].refresh_grace_seconds), kept on its record', async t => {
  const ctx = await buildApp(t, { clients: [CLIENT, SHORT] })
  t.equal((await ctx.app.mcpOAuth.storage.getClient(SHORT.client_id, ctx.clock.now()))?.refreshGraceSeconds, 5, 'persisted on the client record')
  const short = (await issue(ctx, SHORT.client_id)).refresh_token
  const long = (await issue(ctx)).refresh_token
  const s1 = await refresh(ctx, short, SHORT.client_id)
  const l1 = await refresh(ctx, long)
  ctx.clock.advance(5000)
  t.equal((await refresh(ctx, short, SHORT.client_id)).body.refresh_token, s1.body.refresh_token, 'within its 5 s')
  ctx.clock.advance(1000)
  t.equal((await refresh(ctx, short, SHORT.client_id)).body.error, 'invalid_grant', 'past its 5 s: reuse')
  t.equal(await call(ctx, s1.body.access_token as string), 401)
  t.equal((await refresh(ctx, long)).body.refresh_token, l1.body.refresh_token, 'the other client keeps the default 60 s')
})

t.test('grace: start-up warnings only well above the default', async t => {
  const warned = async (opts: Record<string, unknown>) => {
    const settings: string[] = []
    await buildApp(t, { clients: [CLIENT], ...opts, auditSink: (e, f) => { if (e === 'config_weakened') settings.push(String((f as { setting: string }).setting)) } })
    return settings.filter(s => /refreshGrace|refresh_grace/.test(s))
  }
  t.same(await warned({}), [], 'default (60 s): no warning')
  t.same(await warned({ refreshGraceSeconds: 600 }), [], '600 s: no warning')
  t.match(await warned({ refreshGraceSeconds: 601 }), [/refreshGraceSeconds is 601/])
  t.match(await warned({ clients: [{ ...CLIENT, refresh_grace_seconds: 900 }] }), [/clients\[0\]\.refresh_grace_seconds is 900/])
  await t.rejects(buildApp(t, { clients: [CLIENT], refreshGraceMaxReplays: 0 }), /refreshGraceMaxReplays/)
})

// ---- finding 10 --------------------------------------------------------------------------

/** A code as the callback issues it (saved straight into the store: the upstream leg is not what is tested). */
function saveCode (ctx: TestApp): Promise<{ code: string, grantId: string }> {
  return storeCode(ctx.app.mcpOAuth.storage, { clientId: CLIENT.client_id, redirectUri: CLIENT.redirect_uris[0] as string, resource: RESOURCE, now: ctx.clock.now() })
}

function exchange (ctx: TestApp, code: string) {
  return token(ctx, { grant_type: 'authorization_code', code, code_verifier: VERIFIER, redirect_uri: CLIENT.redirect_uris[0] as string, client_id: CLIENT.client_id })
}

/**
 * A memory store whose grant write (`method`) waits at `where` ('before' or 'after' the real
 * write) until released: the first exchange is held there while the replay runs.
 */
function pausing (method: 'saveGrantWithTokens', where: 'before' | 'after') {
  const inner = new MemoryStore({ sweepIntervalMs: 0 })
  const { store, atPause, release } = pauseAt(inner, method, where)
  return { store: store as Store, atPause, release }
}

t.test('finding 10: a code replayed while its first exchange is still writing revokes what it issued, in every interleaving', async t => {
  const cases = [
    ['replay before the grant write', 'saveGrantWithTokens', 'before'],
    ['replay after the grant write, before the answer', 'saveGrantWithTokens', 'after']
  ] as const
  for (const [label, method, where] of cases) {
    const events: string[] = []
    const { store, atPause, release } = pausing(method, where)
    const ctx = await buildApp(t, { clients: [CLIENT], store, auditSink: e => { events.push(e) } })
    const { code, grantId } = await saveCode(ctx)
    const first = exchange(ctx, code)
    await atPause
    const replay = await exchange(ctx, code)
    t.equal(replay.status, 400, `${label}: the replay is refused`)
    t.equal(replay.body.error, 'invalid_grant')
    release()
    const answer = await first
    t.not(answer.status, 500, `${label}: the first exchange does not crash (${answer.status})`)
    if (answer.status === 200) {
      t.equal(await call(ctx, answer.body.access_token as string), 401, `${label}: its access token is dead`)
      t.equal((await refresh(ctx, answer.body.refresh_token as string)).body.error, 'invalid_grant', `${label}: its refresh token is dead`)
    } else {
      t.equal(answer.body.error, 'invalid_grant', `${label}: the first exchange is refused`)
      t.match(answer.body.error_description, /more than once|already used/)
    }
    t.equal(await ctx.app.mcpOAuth.storage.getGrant(grantId, ctx.clock.now()), null, `${label}: no grant survives`)
    t.same(await ctx.app.mcpOAuth.storage.listGrants({ userId: 'u-1' }, ctx.clock.now()), [], `${label}: nothing listed for the user`)
    t.ok(events.includes('code_reuse'), `${label}: audited`)
  }
})

t.test('finding 10: the replay after the exchange answered still revokes (as before)', async t => {
  const ctx = await buildApp(t, { clients: [CLIENT] })
  const { code } = await saveCode(ctx)
  const first = await exchange(ctx, code)
  t.equal(first.status, 200)
  t.equal((await exchange(ctx, code)).body.error, 'invalid_grant')
  t.equal(await call(ctx, first.body.access_token as string), 401)
})
