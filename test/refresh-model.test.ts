import t from 'tap'
import fc from 'fast-check'
import { buildApp, RESOURCE, type TestApp } from './helpers/app.js'

/**
 * Model-based test: random sequences of issue / refresh (newest or a retired token) / revoke /
 * advance-the-clock / call, checked against a small model of which tokens must work.
 */

const CLIENT = { client_id: 'app', redirect_uris: ['http://127.0.0.1/cb'] }
const TTL = { accessToken: 60, refreshToken: 600, grant: 1000, code: 60, flow: 600 }
const GRACE = 5
/** Replays a retired token gets within the window (small, so that sequences reach the cap). */
const MAX_REPLAYS = 3

interface Issued {
  refresh: string
  access: string
  accessExpiresAt: number
  refreshExpiresAt: number
  /** When this refresh token was exchanged, and for what (the successor pair). */
  rotatedAt?: number
  successor?: { access: string, refresh: string }
  /** Grace replays it got so far. */
  replays: number
}

interface Family {
  alive: boolean
  grantExpiresAt: number
  chain: Issued[]
  revokedAccess: Set<string>
}

interface Model {
  families: Family[]
}

interface Real {
  ctx: TestApp
}

async function post (ctx: TestApp, url: string, body: Record<string, string>) {
  const res = await ctx.app.inject({ method: 'POST', url, payload: body })
  return { status: res.statusCode, body: res.statusCode === 200 && res.body === '' ? {} : res.json() as Record<string, string> }
}

function now (r: Real): number {
  return r.ctx.clock.t
}

class IssueCmd implements fc.AsyncCommand<Model, Real> {
  check (): boolean { return true }
  async run (m: Model, r: Real): Promise<void> {
    const grant = await r.ctx.app.mcpOAuth.grants.createGrant({ userId: 'u', clientId: CLIENT.client_id, scopes: ['mcp:tools'], resource: RESOURCE })
    const tokens = await r.ctx.app.mcpOAuth.grants.issueTokens(grant)
    const t0 = now(r)
    m.families.push({
      alive: true,
      grantExpiresAt: t0 + TTL.grant * 1000,
      revokedAccess: new Set(),
      chain: [{ refresh: tokens.refresh_token, access: tokens.access_token, accessExpiresAt: t0 + TTL.accessToken * 1000, refreshExpiresAt: t0 + TTL.refreshToken * 1000, replays: 0 }]
    })
  }

  toString (): string { return 'issue' }
}

class RefreshCmd implements fc.AsyncCommand<Model, Real> {
  constructor (readonly family: number, readonly back: number) {}
  check (m: Model): boolean { return m.families.length > 0 }
  async run (m: Model, r: Real): Promise<void> {
    const fam = m.families[this.family % m.families.length] as Family
    const idx = Math.max(0, fam.chain.length - 1 - this.back)
    const entry = fam.chain[idx] as Issued
    const res = await post(r.ctx, '/oauth/token', { grant_type: 'refresh_token', refresh_token: entry.refresh, client_id: CLIENT.client_id })
    const t1 = now(r)
    const live = fam.alive && t1 < fam.grantExpiresAt && t1 < entry.refreshExpiresAt
    if (!live) {
      if (res.status !== 400 || res.body.error !== 'invalid_grant') throw new Error(`dead token refreshed: ${res.status}`)
      return
    }
    if (entry.rotatedAt === undefined) {
      if (res.status !== 200) throw new Error(`live token refused: ${JSON.stringify(res.body)}`)
      entry.rotatedAt = t1
      entry.successor = { access: res.body.access_token as string, refresh: res.body.refresh_token as string }
      fam.chain.push({
        refresh: res.body.refresh_token as string,
        access: res.body.access_token as string,
        accessExpiresAt: t1 + TTL.accessToken * 1000,
        refreshExpiresAt: Math.min(t1 + TTL.refreshToken * 1000, fam.grantExpiresAt),
        replays: 0
      })
      return
    }
    if (t1 - entry.rotatedAt <= GRACE * 1000 && entry.replays < MAX_REPLAYS) {
      entry.replays++
      if (res.status !== 200) throw new Error(`retry inside the grace window refused: ${JSON.stringify(res.body)}`)
      if (res.body.refresh_token !== entry.successor?.refresh || res.body.access_token !== entry.successor?.access) throw new Error('grace retry got another pair')
      return
    }
    if (res.status !== 400 || res.body.error !== 'invalid_grant') throw new Error(`replay outside the window or past the cap accepted: ${res.status}`)
    fam.alive = false
  }

  toString (): string { return `refresh(f${this.family}, back ${this.back})` }
}

/** A client that sends the same refresh twice at once (a retry racing the original). */
class DoubleRefreshCmd implements fc.AsyncCommand<Model, Real> {
  constructor (readonly family: number) {}
  check (m: Model): boolean { return m.families.length > 0 }
  async run (m: Model, r: Real): Promise<void> {
    const fam = m.families[this.family % m.families.length] as Family
    const entry = fam.chain[fam.chain.length - 1] as Issued
    const body = { grant_type: 'refresh_token', refresh_token: entry.refresh, client_id: CLIENT.client_id }
    const [a, b] = await Promise.all([post(r.ctx, '/oauth/token', body), post(r.ctx, '/oauth/token', body)])
    const t1 = now(r)
    const live = fam.alive && t1 < fam.grantExpiresAt && t1 < entry.refreshExpiresAt && entry.rotatedAt === undefined
    if (!live) {
      if (a.status === 200 && entry.rotatedAt !== undefined && t1 - entry.rotatedAt <= GRACE * 1000) return
      if (a.status !== 400 || b.status !== 400) throw new Error('dead or retired token refreshed twice')
      if (entry.rotatedAt !== undefined && fam.alive && t1 < fam.grantExpiresAt) fam.alive = false
      return
    }
    if (a.status !== 200 || b.status !== 200) throw new Error(`concurrent retry refused: ${a.status} ${b.status}`)
    if (a.body.refresh_token !== b.body.refresh_token) throw new Error('two successors for one token')
    entry.rotatedAt = t1
    entry.replays = 1
    entry.successor = { access: a.body.access_token as string, refresh: a.body.refresh_token as string }
    fam.chain.push({
      refresh: a.body.refresh_token as string,
      access: a.body.access_token as string,
      accessExpiresAt: t1 + TTL.accessToken * 1000,
      refreshExpiresAt: Math.min(t1 + TTL.refreshToken * 1000, fam.grantExpiresAt),
      replays: 0
    })
  }

  toString (): string { return `double-refresh(f${this.family})` }
}

class RevokeCmd implements fc.AsyncCommand<Model, Real> {
  constructor (readonly family: number, readonly refresh: boolean) {}
  check (m: Model): boolean { return m.families.length > 0 }
  async run (m: Model, r: Real): Promise<void> {
    const fam = m.families[this.family % m.families.length] as Family
    const last = fam.chain[fam.chain.length - 1] as Issued
    const res = await post(r.ctx, '/oauth/revoke', { token: this.refresh ? last.refresh : last.access, client_id: CLIENT.client_id })
    if (res.status !== 200) throw new Error(`revoke answered ${res.status}`)
    if (this.refresh) {
      if (fam.alive && now(r) < fam.grantExpiresAt && now(r) < last.refreshExpiresAt) fam.alive = false
    } else {
      fam.revokedAccess.add(last.access)
    }
  }

  toString (): string { return `revoke(f${this.family}, ${this.refresh ? 'refresh' : 'access'})` }
}

class AdvanceCmd implements fc.AsyncCommand<Model, Real> {
  constructor (readonly ms: number) {}
  check (): boolean { return true }
  async run (_m: Model, r: Real): Promise<void> { r.ctx.clock.advance(this.ms) }
  toString (): string { return `advance(${this.ms})` }
}

class CallCmd implements fc.AsyncCommand<Model, Real> {
  constructor (readonly family: number, readonly back: number) {}
  check (m: Model): boolean { return m.families.length > 0 }
  async run (m: Model, r: Real): Promise<void> {
    const fam = m.families[this.family % m.families.length] as Family
    const entry = fam.chain[Math.max(0, fam.chain.length - 1 - this.back)] as Issued
    const res = await r.ctx.app.inject({ method: 'POST', url: '/mcp', headers: { authorization: `Bearer ${entry.access}` } })
    const t1 = now(r)
    const expected = fam.alive && t1 < fam.grantExpiresAt && t1 < entry.accessExpiresAt && !fam.revokedAccess.has(entry.access) ? 200 : 401
    if (res.statusCode !== expected) throw new Error(`access token: expected ${expected}, got ${res.statusCode}`)
  }

  toString (): string { return `call(f${this.family}, back ${this.back})` }
}

t.test('issue / refresh / replay / revoke / expire sequences agree with the model', async t => {
  const commands = [
    fc.constant(new IssueCmd()),
    fc.tuple(fc.nat(4), fc.nat(2)).map(([f, b]) => new RefreshCmd(f, b)),
    fc.nat(4).map(f => new DoubleRefreshCmd(f)),
    fc.tuple(fc.nat(4), fc.boolean()).map(([f, rf]) => new RevokeCmd(f, rf)),
    fc.oneof(fc.integer({ min: 0, max: 6000 }), fc.integer({ min: 0, max: 400_000 })).map(ms => new AdvanceCmd(ms)),
    fc.tuple(fc.nat(4), fc.nat(2)).map(([f, b]) => new CallCmd(f, b))
  ]
  let runs = 0
  await fc.assert(
    fc.asyncProperty(fc.commands(commands, { maxCommands: 40 }), async cmds => {
      runs++
      const ctx = await buildApp({ teardown: () => {} }, { clients: [CLIENT], ttl: TTL, refreshGraceSeconds: GRACE, refreshGraceMaxReplays: MAX_REPLAYS })
      try {
        await fc.asyncModelRun(() => ({ model: { families: [] }, real: { ctx } }), cmds)
      } finally {
        await ctx.app.close()
      }
    }),
    { numRuns: 60 }
  )
  t.equal(runs >= 60, true, `${runs} random sequences checked`)
})
