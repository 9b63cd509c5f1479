/**
 * `npm run bench`: the performance targets of the plugin, measured as ratios within one run (the
 * machine is shared and noisy, so absolute figures mean little; ratios measured side by side do).
 *
 *   guard   one process, the same handler at /bare and behind the guard at /protected; also the
 *           401 path, the per-user rate limiter, metrics on, and the Redis store (with its local
 *           access-token cache, and with `cache: false`).
 *   token   the plugin's token endpoint (refresh rotation, code exchange) against oidc-provider
 *           doing the same grants, and against a bare route that parses the same form body.
 *   machine the grants without a user (client credentials, jwt-bearer with ID-JAGs) against
 *           oidc-provider's client credentials, and two floors in the plugin's process: a route
 *           that parses the same form, and the same with one ES256 check of the ID-JAG by jose.
 *   memory  heap per live grant at 100,000 grants; heap and event-loop delay around the sweep.
 *
 * Servers run in forked processes; autocannon runs here. Every measurement is repeated
 * BENCH_ROUNDS times, alternating the scenarios (ABC CBA ABC...), and the median is kept. A ratio is the
 * median of the per-round ratios (each scenario against its reference of the same round, measured
 * seconds apart), so a machine that speeds up or slows down between rounds moves both sides.
 *
 * Environment: BENCH_DURATION (seconds per run, default 3), BENCH_ROUNDS (default 9),
 * BENCH_CONNECTIONS (default 50), BENCH_GRANTS (memory, default 100000),
 * BENCH_ONLY (comma-separated: guard,token,machine,memory; default all), BENCH_TARGETS (comma-separated
 * target names within those parts, e.g. bare,protected: for a quick A/B), BENCH_PROFILE (a folder: a V8
 * CPU profile of the server is written there for every measured run, minting left out).
 * Exit status 1 when a target is missed or a run was invalid (unexpected status codes).
 *
 * Before/after: BENCH_BASELINE=/path/to/another/checkout (a git worktree of an older commit, with
 * node_modules) starts every server of the guard and token parts a second time from that checkout's
 * test/bench/server.ts (same spec, this runner's loader; it imports its own lib/ and must speak this
 * protocol.ts). Each baseline target runs right after or right before its twin in every round (the
 * serpentine order alternates which goes first), and a second table gives per target "after vs
 * before": the median of the per-round ratios of this checkout's req/s to the baseline's, with the
 * p50 latencies and CPU per request of both; no pass/fail. A target the baseline cannot start says
 * so in its row. oidc-provider runs once: it loads nothing of lib/. The memory part is not paired.
 */
import { randomBytes } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'
import { BenchServer, firstMessage, forkHere, stopChild } from './children.js'
import { startIdp } from './idp.js'
import type { MemoryResult } from './memory.js'
import { TOKEN_BENCH, type ServerSpec } from './protocol.js'
import { redisServerAvailable, startRedisServer, type RedisServer } from '../helpers/redis.js'

const DURATION = positive('BENCH_DURATION', 3)
const ROUNDS = Math.round(positive('BENCH_ROUNDS', 9))
const CONNECTIONS = Math.round(positive('BENCH_CONNECTIONS', 50))
const WARMUP = Math.min(2, DURATION)
/** Server CPU share (of one core) below which a run did not have the machine to itself. */
const SATURATED = 0.85
const PROFILE = process.env.BENCH_PROFILE
const ONLY = new Set((process.env.BENCH_ONLY ?? 'guard,token,machine,memory').split(',').map(s => s.trim()))
const TARGETS = process.env.BENCH_TARGETS ? new Set(process.env.BENCH_TARGETS.split(',').map(s => s.trim())) : undefined
const BASELINE = baseline(process.env.BENCH_BASELINE)

function positive (name: string, def: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return def
  const value = Number(raw)
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number`)
  return value
}

/** BENCH_BASELINE: the other checkout's server.ts, and both checkouts' commits for the report. */
function baseline (raw: string | undefined): { root: string, serverFile: string, label: string, ours: string } | undefined {
  if (raw === undefined || raw === '') return undefined
  const root = resolve(raw)
  const serverFile = join(root, 'test/bench/server.ts')
  if (!existsSync(serverFile)) throw new Error(`BENCH_BASELINE: ${serverFile} does not exist (a checkout of this project is expected)`)
  return { root, serverFile, label: commitOf(root), ours: commitOf(fileURLToPath(new URL('../..', import.meta.url))) }
}

/** The commit a checkout is at, `-dirty` when it has uncommitted changes; '?' when git cannot tell. */
function commitOf (dir: string): string {
  try {
    return execFileSync('git', ['-C', dir, 'describe', '--always', '--dirty'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
  } catch {
    return '?'
  }
}

// ---- measuring -------------------------------------------------------------------------------

interface Target {
  name: string
  server: BenchServer
  method: 'GET' | 'POST'
  path: string
  /** Send `Authorization: Bearer` with the server's access token. */
  bearer?: boolean
  /** A fixed Authorization header (machine grants: the client's credentials, reusable). */
  authorization?: string
  /** A fixed form body. */
  form?: string
  /** The status every response must have. */
  expect: number
  /**
   * Single-use credentials minted by the server, (`fake`) token-shaped strings nobody checks, or
   * (`signed`) JWTs signed in this process by the benchmark's IdP: ID-JAGs, or the private_key_jwt
   * machine client's assertions.
   */
  pool?: { body: (item: string) => string } & ({ grant: 'refresh' | 'code' | 'fake' } | { grant: 'signed', sign: (n: number) => Promise<string[]> })
  /** BENCH_BASELINE: the target of this checkout that this baseline target mirrors. */
  of?: string
}

interface Sample {
  rps: number
  p50: number
  p99: number
  /** Server CPU time / wall time (1 = one core busy all along). */
  cpu: number
  /** The same for the load generator (this process). */
  genCpu: number
  /** Responses with another status than expected, errors and timeouts. */
  bad: number
  /** What the unexpected answers were, for the progress line. */
  badDetail: string
}

/** Requests per second each pool target reached last time: sizes its next pool. */
const lastRate = new Map<string, number>()

let profiles = 0

async function measure (target: Target, seconds: number, profile = false): Promise<Sample> {
  for (let attempt = 0; ; attempt++) {
    const file = profile && PROFILE !== undefined
      ? join(PROFILE, `${String(++profiles).padStart(2, '0')}-${target.name.replace(/\W+/g, '-')}.cpuprofile`)
      : undefined
    const sample = await measureOnce(target, seconds, file)
    // A pool that ran dry makes the tail of the run fail; size it from this run and measure again.
    if (sample.exhausted && attempt < 2) {
      progress(`${target.name}: the pool ran dry, again with a larger one`)
      continue
    }
    return sample
  }
}

async function measureOnce (target: Target, seconds: number, profileFile?: string): Promise<Sample & { exhausted: boolean }> {
  let items: string[] = []
  let used = 0
  const pool = target.pool
  if (pool !== undefined) {
    const n = Math.ceil((lastRate.get(target.name) ?? 5000) * seconds * 1.4) + 1000
    items = pool.grant === 'fake'
      ? Array.from({ length: n }, () => 'mcprt_' + randomBytes(32).toString('base64url'))
      : pool.grant === 'signed' ? await pool.sign(n) : await target.server.mint(pool.grant, n)
  }
  if (profileFile !== undefined) await target.server.profileStart()
  const cpuBefore = await target.server.cpuMicros()
  const genBefore = process.cpuUsage()
  const started = performance.now()
  const result = await autocannon({
    url: `http://127.0.0.1:${target.server.port}`,
    connections: CONNECTIONS,
    duration: seconds,
    timeout: 10,
    requests: [{
      method: target.method,
      path: target.path,
      headers: {
        ...(pool !== undefined || target.form !== undefined ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
        ...(target.bearer === true ? { authorization: `Bearer ${target.server.accessToken as string}` } : {}),
        ...(target.authorization !== undefined ? { authorization: target.authorization } : {})
      },
      ...(target.form !== undefined ? { body: target.form } : {}),
      ...(pool !== undefined
        ? {
            // One fresh credential per request; past the end of the pool, the last one again (then it fails and shows).
            setupRequest: (request) => {
              request.body = pool.body(items[Math.min(used++, items.length - 1)] as string)
              return request
            }
          }
        : {})
    }]
  })
  const wall = performance.now() - started
  const cpu = (await target.server.cpuMicros() - cpuBefore) / 1000 / wall
  if (profileFile !== undefined) await target.server.profileStop(profileFile)
  // Unused refresh tokens would stay in the server's heap (and its GC work) for the rest of the run.
  if (pool?.grant === 'refresh' && used < items.length) await target.server.discard(items.slice(used))
  const gen = process.cpuUsage(genBefore)
  const genCpu = (gen.user + gen.system) / 1000 / wall
  const good = result.statusCodeStats[String(target.expect)]?.count ?? 0
  const total = Object.values(result.statusCodeStats).reduce((sum, s) => sum + s.count, 0)
  const rps = good / result.duration
  if (pool !== undefined) lastRate.set(target.name, Math.max(total / result.duration, lastRate.get(target.name) ?? 0))
  const exhausted = used > items.length && pool !== undefined
  const others = Object.entries(result.statusCodeStats).filter(([code]) => code !== String(target.expect))
    .map(([code, s]) => `${s.count}x${code}`)
  if (result.errors > 0) others.push(`${result.errors} errors`)
  if (result.timeouts > 0) others.push(`${result.timeouts} timeouts`)
  if (exhausted) others.push(`pool of ${items.length} exhausted`)
  return {
    rps,
    p50: result.latency.p50,
    p99: result.latency.p99,
    cpu,
    genCpu,
    bad: total - good + result.errors + result.timeouts,
    badDetail: others.join(', '),
    exhausted
  }
}

function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid] as number : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2
}

interface Measured {
  name: string
  rps: number
  p50: number
  p99: number
  cpu: number
  /** Server CPU time per request, microseconds. */
  us: number
  bad: number
  /** Requests per second of each round, in order. */
  runs: number[]
  /** Server CPU time / wall time of each round. */
  runCpu: number[]
}

/** A warm-up run of each target, then ROUNDS rounds in which every target runs once, in turn. */
async function alternate (all: Target[]): Promise<Map<string, Measured>> {
  // A row needs its target and its reference: without either it is left out of the table.
  const targets = TARGETS === undefined ? all : all.filter(t => TARGETS.has(t.of ?? t.name))
  for (const target of targets) await measure(target, WARMUP)
  const samples = new Map<string, Sample[]>(targets.map(t => [t.name, []]))
  for (let round = 0; round < ROUNDS; round++) {
    // Serpentine order (ABC, CBA, ABC...): a target that always ran first, or always right after
    // another one, would carry that position's effects into every one of its samples.
    const order = round % 2 === 0 ? targets : [...targets].reverse()
    for (const target of order) {
      const sample = await measure(target, DURATION, true)
      samples.get(target.name)?.push(sample)
      progress(`round ${round + 1}/${ROUNDS} ${target.name}: ${Math.round(sample.rps)} req/s, cpu server ${sample.cpu.toFixed(2)} ` +
        `(${(sample.cpu * 1e6 / sample.rps).toFixed(0)} us/req) load ${sample.genCpu.toFixed(2)}` +
        (sample.bad > 0 ? `, unexpected: ${sample.badDetail}` : ''))
    }
  }
  const out = new Map<string, Measured>()
  for (const [name, list] of samples) {
    out.set(name, {
      name,
      rps: median(list.map(s => s.rps)),
      p50: median(list.map(s => s.p50)),
      p99: median(list.map(s => s.p99)),
      cpu: median(list.map(s => s.cpu)),
      us: median(list.map(s => s.cpu * 1e6 / s.rps)),
      bad: list.reduce((sum, s) => sum + s.bad, 0),
      runs: list.map(s => s.rps),
      runCpu: list.map(s => s.cpu)
    })
  }
  return out
}

function progress (line: string): void {
  process.stderr.write(`  ${line}\n`)
}

// ---- the table -------------------------------------------------------------------------------

/** A ratio as the tables show it: the median of the per-round ratios, their range, the rounds that counted. */
interface RatioFigures {
  ratio?: number
  /** Lowest and highest per-round ratio. */
  spread?: [number, number]
  /** Rounds that counted, of all. */
  counted?: [number, number]
}

interface Row extends RatioFigures {
  scenario: string
  m?: Measured
  reference?: string
  /** Minimum ratio. */
  target?: number
  note?: string
}

const rows: Row[] = []
/** Lines printed under the table: figures that are not ratios of two HTTP runs. */
const notes: string[] = []
let failed = false

function verdict (row: Row): string {
  if (row.m === undefined) return row.note ?? 'n/a'
  if (row.m.bad > 0) return 'INVALID'
  if (row.target === undefined || row.ratio === undefined) return 'info'
  return row.ratio >= row.target ? 'pass' : 'FAIL'
}

function versus (scenario: string, m: Measured | undefined, ref: Measured | undefined, reference: string, target?: number): void {
  if (m === undefined || ref === undefined) return
  rows.push({ scenario, m, ...perRound(m, ref), reference, ...(target !== undefined ? { target } : {}) })
}

/** The median of the per-round ratios of `m` to `ref`, their spread, and how many rounds counted. */
function perRound (m: Measured, ref: Measured): { ratio: number, spread: [number, number], counted: [number, number] } {
  // A round in which either server had less than SATURATED of a core measured the machine (another
  // tenant, the load generator starved), not the server: its pair does not count. With fewer than
  // three pairs left, all of them count and the row says so.
  const pairs = m.runs.map((rps, i) => ({ ratio: rps / (ref.runs[i] as number), ok: (m.runCpu[i] as number) >= SATURATED && (ref.runCpu[i] as number) >= SATURATED }))
  const usable = pairs.filter(p => p.ok)
  const counted = usable.length >= 3 ? usable : pairs
  const ratios = counted.map(p => p.ratio)
  return {
    ratio: median(ratios),
    spread: [Math.min(...ratios), Math.max(...ratios)],
    counted: [usable.length >= 3 ? usable.length : 0, pairs.length]
  }
}

function printTable (): void {
  const header = ['scenario', 'req/s', 'p50 ms', 'p99 ms', 'srv cpu', 'srv us/req', 'ratio', 'rounds', 'reference', 'target', 'result']
  const lines = rows.map(row => {
    const v = verdict(row)
    if (v === 'FAIL' || v === 'INVALID') failed = true
    const m = row.m
    return [
      row.scenario,
      m ? String(Math.round(m.rps)) : '-',
      m ? m.p50.toFixed(1) : '-',
      m ? m.p99.toFixed(1) : '-',
      m ? m.cpu.toFixed(2) : '-',
      m ? m.us.toFixed(0) : '-',
      row.ratio !== undefined ? row.ratio.toFixed(2) : '-',
      row.spread !== undefined ? `${row.spread[0].toFixed(2)}-${row.spread[1].toFixed(2)} (${row.counted?.[0]}/${row.counted?.[1]})` : '-',
      row.reference ?? '-',
      row.target !== undefined ? `>= ${row.target.toFixed(2)}` : '-',
      row.m === undefined ? (row.note ?? 'n/a').split(/[ :(]/)[0] as string : v
    ]
  })
  printAligned(header, lines)
  for (const row of rows) {
    if (row.m === undefined && row.note !== undefined) console.log(`  ${row.scenario}: ${row.note}`)
  }
  // Rows whose ratio had to use starved rounds (fewer than three rounds with a saturated server).
  const starved = [...new Set(rows.filter(r => r.counted !== undefined && r.counted[0] === 0).map(r => r.scenario))]
  console.log('  rounds: the per-round ratios that counted (lowest-highest) and how many rounds counted: a round counts when ' +
    `both servers had at least ${SATURATED * 100} % of a core.`)
  for (const note of notes) console.log(`  ${note}`)
  printStarved(starved)
}

function printStarved (scenarios: string[]): void {
  if (scenarios.length > 0) {
    console.log(`  note: fewer than three rounds had a saturated server in: ${scenarios.join('; ')}. The machine was busy ` +
      'with something else; those ratios are noise more than measurement: run again when it is quiet.')
  }
}

function printAligned (header: string[], lines: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map(l => (l[i] ?? '').length)))
  const fmt = (cells: string[]) => '| ' + cells.map((c, i) => c.padEnd(widths[i] as number)).join(' | ') + ' |'
  console.log(fmt(header))
  console.log('|' + widths.map(w => '-'.repeat(w + 2)).join('|') + '|')
  for (const l of lines) console.log(fmt(l))
}

// ---- BENCH_BASELINE: this checkout against another one ---------------------------------------

type Started = BenchServer | { unsupported: string }

/** The baseline's server of the same spec as each server of this checkout, or why it did not start. */
const twins = new Map<BenchServer, Started>()

interface AbRow extends RatioFigures {
  scenario: string
  after: Measured
  before?: Measured
  /** Why there is no baseline figure. */
  note?: string
}

const abRows: AbRow[] = []
/** Lines under the after-vs-before table. */
const abNotes: string[] = []

/** BENCH_BASELINE: start the baseline's server of `spec` next to ours. Never throws: the row will say what went wrong. */
async function startTwin (ours: Started, spec: ServerSpec, started: BenchServer[]): Promise<void> {
  if (BASELINE === undefined || !(ours instanceof BenchServer)) return
  let twin: Started
  try {
    twin = await BenchServer.start(spec, BASELINE.serverFile)
  } catch (err) {
    twin = { unsupported: err instanceof Error ? err.message : String(err) }
  }
  if (twin instanceof BenchServer) started.push(twin)
  else progress(`baseline: no ${spec.kind} server ${JSON.stringify(spec)}: ${twin.unsupported}`)
  twins.set(ours, twin)
}

/** Each target followed by its baseline twin (the same request to the same spec), so that the two run back to back. */
function withTwins (targets: Target[]): Target[] {
  return targets.flatMap(t => {
    const twin = twins.get(t.server)
    return twin instanceof BenchServer ? [t, { ...t, name: `${t.name} (before)`, server: twin, of: t.name }] : [t]
  })
}

/** One after-vs-before row per measured target that has (or should have had) a baseline twin. */
function abVersus (part: string, targets: Target[], r: Map<string, Measured>): void {
  for (const t of targets) {
    const twin = twins.get(t.server)
    const after = r.get(t.name)
    if (twin === undefined || after === undefined) continue
    const scenario = `${part}: ${t.name}`
    const before = r.get(`${t.name} (before)`)
    if (!(twin instanceof BenchServer)) abRows.push({ scenario, after, note: `the baseline did not start this server (${twin.unsupported})` })
    else if (before !== undefined) abRows.push({ scenario, after, before, ...perRound(after, before) })
  }
}

function printAbTable (): void {
  if (BASELINE === undefined || abRows.length === 0) return
  console.log(`\nafter vs before: this checkout (${BASELINE.ours}) against BENCH_BASELINE=${BASELINE.root} (${BASELINE.label}), ` +
    'each round\'s req/s against the baseline\'s, measured back to back (no target: figures to read)\n')
  const header = ['after vs before', 'req/s after', 'req/s before', 'ratio', 'rounds', 'p50 ms after', 'p50 ms before', 'srv us/req after', 'srv us/req before', 'result']
  printAligned(header, abRows.map(row => {
    const { after, before } = row
    const invalid = after.bad > 0 || (before?.bad ?? 0) > 0
    if (invalid) failed = true
    return [
      row.scenario,
      String(Math.round(after.rps)),
      before ? String(Math.round(before.rps)) : '-',
      row.ratio !== undefined ? row.ratio.toFixed(2) : '-',
      row.spread !== undefined ? `${row.spread[0].toFixed(2)}-${row.spread[1].toFixed(2)} (${row.counted?.[0]}/${row.counted?.[1]})` : '-',
      after.p50.toFixed(1),
      before ? before.p50.toFixed(1) : '-',
      after.us.toFixed(0),
      before ? before.us.toFixed(0) : '-',
      before === undefined ? 'n/a' : invalid ? 'INVALID' : 'info'
    ]
  }))
  for (const row of abRows) {
    if (row.note !== undefined) console.log(`  ${row.scenario}: ${row.note}`)
  }
  for (const note of abNotes) console.log(`  ${note}`)
  printStarved(abRows.filter(r => r.counted !== undefined && r.counted[0] === 0).map(r => r.scenario))
}

// ---- scenarios -------------------------------------------------------------------------------

async function guardBench (): Promise<void> {
  console.log('\n## guard (GET, trivial handler)')
  const started: BenchServer[] = []
  let redis: RedisServer | undefined
  const start = async (spec: ServerSpec) => {
    const s = await BenchServer.start(spec)
    if (s instanceof BenchServer) started.push(s)
    await startTwin(s, spec, started)
    return s
  }
  try {
    const main = await start({ kind: 'guard', store: 'memory', rateLimit: false, metrics: false })
    if (!(main instanceof BenchServer)) throw new Error(`guard server: ${main.unsupported}`)
    const limited = await start({ kind: 'guard', store: 'memory', rateLimit: true, metrics: false })
    const metrics = await start({ kind: 'guard', store: 'memory', rateLimit: false, metrics: true })
    let redisServer: BenchServer | { unsupported: string }
    let redisUncached: BenchServer | { unsupported: string }
    if (redisServerAvailable()) {
      redis = await startRedisServer()
      redisServer = await start({ kind: 'guard', store: 'redis', redisUrl: redis.url, rateLimit: false, metrics: false })
      redisUncached = await start({ kind: 'guard', store: 'redis', redisUrl: redis.url, redisCache: false, rateLimit: false, metrics: false })
    } else {
      redisServer = { unsupported: 'skipped: redis-server is not installed (apt-get install redis-server)' }
      redisUncached = redisServer
    }
    // A server for the in-process timing of the hook only: it serves no measured request.
    const probe = await start({ kind: 'guard', store: 'memory', rateLimit: false, metrics: false })
    const targets: Target[] = [
      // The same request to both routes (the bare route ignores the header): the guard is the only difference.
      { name: 'bare', server: main, method: 'GET', path: '/bare', bearer: true, expect: 200 },
      { name: 'protected', server: main, method: 'GET', path: '/protected', bearer: true, expect: 200 },
      { name: 'noop-hook', server: main, method: 'GET', path: '/hooked', bearer: true, expect: 200 },
      { name: 'no-token', server: main, method: 'GET', path: '/protected', expect: 401 }
    ]
    if (limited instanceof BenchServer) targets.push({ name: 'rate-limited', server: limited, method: 'GET', path: '/protected', bearer: true, expect: 200 })
    if (metrics instanceof BenchServer) targets.push({ name: 'metrics', server: metrics, method: 'GET', path: '/protected', bearer: true, expect: 200 })
    if (redisServer instanceof BenchServer) targets.push({ name: 'redis', server: redisServer, method: 'GET', path: '/protected', bearer: true, expect: 200 })
    if (redisUncached instanceof BenchServer) targets.push({ name: 'redis-uncached', server: redisUncached, method: 'GET', path: '/protected', bearer: true, expect: 200 })
    const r = await alternate(withTwins(targets))
    abVersus('guard', targets, r)
    const bare = r.get('bare')
    rows.push({ scenario: 'guard: /bare (memory process)', ...(bare ? { m: bare } : {}), ratio: 1, reference: 'itself' })
    if (probe instanceof BenchServer && bare !== undefined && (TARGETS === undefined || TARGETS.has('protected'))) {
      const us = await probe.hookCost() / 1000
      notes.push(`guard hook in process (memory store, valid token, no HTTP): ${us.toFixed(2)} us per call, ` +
        `${(100 * us / bare.us).toFixed(1)} % of /bare's server time per request in this run (${bare.us.toFixed(0)} us); ` +
        `that alone would put /protected at ${(bare.us / (bare.us + us)).toFixed(2)} of /bare`)
      const twin = twins.get(probe)
      if (twin instanceof BenchServer) {
        try {
          // Order ABBA, the lower figure of each side: the least disturbed of its two.
          const before = Math.min(await twin.hookCost(), await twin.hookCost()) / 1000
          const after = Math.min(us, await probe.hookCost() / 1000)
          abNotes.push(`guard hook in process (no HTTP): ${after.toFixed(2)} us per call after, ${before.toFixed(2)} us before ` +
            `(${(after / before).toFixed(2)} times the time; each the lower of two timings, in the order after, before, before, after)`)
        } catch (err) {
          abNotes.push(`guard hook in process: the baseline could not time its hook (${err instanceof Error ? err.message : String(err)})`)
        }
      }
    }
    versus('guard: /protected, memory store, no rate limit', r.get('protected'), bare, '/bare', 0.9)
    versus('guard: a do-nothing onRequest hook instead (Fastify)', r.get('noop-hook'), bare, '/bare')
    versus('guard: 401 path (no token)', r.get('no-token'), bare, '/bare')
    if (limited instanceof BenchServer) versus('guard: /protected + per-user rate limit', r.get('rate-limited'), bare, '/bare')
    else rows.push({ scenario: 'guard: /protected + per-user rate limit', note: limited.unsupported })
    if (metrics instanceof BenchServer) versus('guard: /protected, metrics on', r.get('metrics'), r.get('protected'), '/protected, metrics off')
    else rows.push({ scenario: 'guard: /protected, metrics on', note: `n/a (${metrics.unsupported})` })
    if (redisServer instanceof BenchServer) versus('guard: /protected, Redis store (local cache)', r.get('redis'), bare, '/bare', 0.6)
    else rows.push({ scenario: 'guard: /protected, Redis store (local cache)', note: redisServer.unsupported })
    // The same store with `cache: false`: every request is a GET (what the first use of a token costs).
    if (redisUncached instanceof BenchServer) versus('guard: /protected, Redis store, cache off', r.get('redis-uncached'), bare, '/bare')
    else rows.push({ scenario: 'guard: /protected, Redis store, cache off', note: redisUncached.unsupported })
  } finally {
    for (const s of started) await s.stop()
    await redis?.destroy()
  }
}

async function tokenBench (): Promise<void> {
  console.log('\n## token endpoint (POST form, public client, PKCE S256, opaque tokens, rotation)')
  const started: BenchServer[] = []
  try {
    const ours = await BenchServer.start({ kind: 'token' })
    if (!(ours instanceof BenchServer)) throw new Error(`token server: ${ours.unsupported}`)
    started.push(ours)
    await startTwin(ours, { kind: 'token' }, started)
    const oidc = await BenchServer.start({ kind: 'oidc' })
    if (!(oidc instanceof BenchServer)) throw new Error(`oidc-provider: ${oidc.unsupported}`)
    started.push(oidc)
    // What MCP clients send: the client id and the resource (RFC 8707) on every token request.
    const client = `client_id=${encodeURIComponent(TOKEN_BENCH.clientId)}&resource=${encodeURIComponent(TOKEN_BENCH.resource)}`
    const refreshBody = (token: string) => `grant_type=refresh_token&refresh_token=${encodeURIComponent(token)}&${client}`
    const codeBody = (code: string) => `grant_type=authorization_code&code=${encodeURIComponent(code)}` +
      `&redirect_uri=${encodeURIComponent(TOKEN_BENCH.redirectUri)}&code_verifier=${TOKEN_BENCH.codeVerifier}&${client}`
    const targets: Target[] = [
      { name: 'plugin refresh', server: ours, method: 'POST', path: '/oauth/token', expect: 200, pool: { grant: 'refresh', body: refreshBody } },
      { name: 'oidc refresh', server: oidc, method: 'POST', path: '/token', expect: 200, pool: { grant: 'refresh', body: refreshBody } },
      { name: 'bare form', server: ours, method: 'POST', path: '/bare-form', expect: 200, pool: { grant: 'fake', body: refreshBody } },
      { name: 'plugin code', server: ours, method: 'POST', path: '/oauth/token', expect: 200, pool: { grant: 'code', body: codeBody } },
      { name: 'oidc code', server: oidc, method: 'POST', path: '/token', expect: 200, pool: { grant: 'code', body: codeBody } }
    ]
    const r = await alternate(withTwins(targets))
    abVersus('token', targets, r)
    const bare = r.get('bare form')
    rows.push({ scenario: 'token: bare route, same form body', ...(bare ? { m: bare } : {}), ratio: 1, reference: 'itself' })
    versus('token: oidc-provider, refresh rotation', r.get('oidc refresh'), bare, 'bare form')
    versus('token: plugin, refresh rotation', r.get('plugin refresh'), r.get('oidc refresh'), 'oidc-provider refresh', 2)
    versus('token: plugin, refresh rotation', r.get('plugin refresh'), bare, 'bare form', 0.5)
    versus('token: oidc-provider, code exchange', r.get('oidc code'), bare, 'bare form')
    versus('token: plugin, code exchange', r.get('plugin code'), r.get('oidc code'), 'oidc-provider code')
    versus('token: plugin, code exchange', r.get('plugin code'), bare, 'bare form', 0.5)
  } finally {
    for (const s of started) await s.stop()
  }
}

/**
 * The grants without a user at the browser, each one a row against oidc-provider's client
 * credentials for the same client (client_secret_basic, one resource, opaque access token, no
 * refresh token). A grant is one entry: its name and its form body, fixed (the client's credentials
 * are reusable) or built around a fresh ID-JAG (single use: a pool signed before each run).
 * `oidc`: oidc-provider does this grant too (it has no ID-JAG grant).
 */
/** The client credentials request's body, on both servers (the client authenticates in a header or with an assertion). */
const CLIENT_CREDENTIALS_BODY = `grant_type=client_credentials&scope=${encodeURIComponent(TOKEN_BENCH.scope)}&resource=${encodeURIComponent(TOKEN_BENCH.resource)}`

const MACHINE_GRANTS: ReadonlyArray<{ name: string, oidc: boolean } & ({ body: string } | { assertion: (idJag: string) => string })> = [
  {
    name: 'client credentials',
    oidc: true,
    body: CLIENT_CREDENTIALS_BODY
  },
  {
    // What the MCP SDK's exchangeJwtAuthGrant sends: the ID-JAG names the resource and the scope.
    name: 'jwt-bearer',
    oidc: false,
    assertion: (idJag) => `grant_type=${encodeURIComponent('urn:ietf:params:oauth:grant-type:jwt-bearer')}&assertion=${idJag}`
  }
]
const MACHINE_REFERENCE = 'oidc client credentials'

async function machineBench (): Promise<void> {
  console.log('\n## machine grants (POST form, confidential client, client_secret_basic, no refresh token)')
  const started: BenchServer[] = []
  const idp = await startIdp()
  try {
    const spec: ServerSpec = { kind: 'token', idp: { issuer: idp.issuer, jwksUri: idp.jwksUri }, machineKey: idp.machineKey }
    const ours = await BenchServer.start(spec)
    if (!(ours instanceof BenchServer)) throw new Error(`token server: ${ours.unsupported}`)
    started.push(ours)
    await startTwin(ours, spec, started)
    const oidc = await BenchServer.start({ kind: 'oidc', machineKey: idp.machineKey })
    if (!(oidc instanceof BenchServer)) throw new Error(`oidc-provider: ${oidc.unsupported}`)
    started.push(oidc)
    const { clientId, secret } = TOKEN_BENCH.machine
    const authorization = `Basic ${Buffer.from(`${clientId}:${secret}`).toString('base64')}`
    const targets: Target[] = MACHINE_GRANTS.flatMap(g => {
      const request = 'body' in g
        ? { form: g.body }
        : { pool: { grant: 'signed' as const, sign: idp.sign, body: g.assertion } }
      const plugin: Target = { name: `plugin ${g.name}`, server: ours, method: 'POST', path: '/oauth/token', expect: 200, authorization, ...request }
      return g.oidc ? [plugin, { ...plugin, name: `oidc ${g.name}`, server: oidc, path: '/token' }] : [plugin]
    })
    // Floors, in the plugin's process: the same client credentials request to a route that parses
    // the form and does nothing, and the jwt-bearer request to one that only checks the ID-JAG's
    // signature with jose. No token server can answer faster than the first, and no jwt-bearer grant
    // that verifies with jose faster than the second.
    const floors: Target[] = MACHINE_GRANTS.map(g => 'body' in g
      ? { name: 'bare form', server: ours, method: 'POST', path: '/bare-form', expect: 200, authorization, form: g.body }
      : { name: 'bare verify', server: ours, method: 'POST', path: '/bare-verify', expect: 200, authorization, pool: { grant: 'signed', sign: idp.sign, body: g.assertion } })
    // Like for like: client credentials with a private_key_jwt client on both servers. Each request
    // carries a fresh client assertion (its jti is spent), so both servers check one ES256 signature,
    // as the jwt-bearer grant does.
    const assertionBody = (assertion: string): string => CLIENT_CREDENTIALS_BODY +
      `&client_assertion_type=${encodeURIComponent('urn:ietf:params:oauth:client-assertion-type:jwt-bearer')}&client_assertion=${assertion}`
    const keyed: Target[] = [
      {
        name: 'plugin client credentials, private_key_jwt',
        server: ours,
        method: 'POST',
        path: '/oauth/token',
        expect: 200,
        pool: { grant: 'signed', sign: n => idp.signClientAssertions(n, `${TOKEN_BENCH.issuer}/oauth/token`), body: assertionBody }
      },
      {
        name: 'oidc client credentials, private_key_jwt',
        server: oidc,
        method: 'POST',
        path: '/token',
        expect: 200,
        pool: { grant: 'signed', sign: n => idp.signClientAssertions(n, `http://127.0.0.1:${oidc.port}/token`), body: assertionBody }
      }
    ]
    // The floors and the keyed pair run the same code in both checkouts (or none of it): no baseline twins.
    const r = await alternate([...withTwins(targets), ...floors, ...keyed])
    abVersus('machine', targets, r)
    const reference = r.get(MACHINE_REFERENCE)
    rows.push({ scenario: 'machine: oidc-provider, client credentials', ...(reference ? { m: reference } : {}), ratio: 1, reference: 'itself' })
    for (const g of MACHINE_GRANTS) {
      versus(`machine: plugin, ${g.name}`, r.get(`plugin ${g.name}`), reference, 'oidc-provider client credentials', 3)
    }
    versus('machine: floor, the form route, nothing done', r.get('bare form'), reference, 'oidc-provider client credentials')
    versus('machine: floor, the form route + one ES256 check (jose)', r.get('bare verify'), reference, 'oidc-provider client credentials')
    versus('machine: plugin, client credentials', r.get('plugin client credentials'), r.get('bare form'), 'the form route')
    versus('machine: plugin, jwt-bearer', r.get('plugin jwt-bearer'), r.get('bare verify'), 'the form route + ES256 check')
    const keyedReference = r.get('oidc client credentials, private_key_jwt')
    versus('machine: oidc-provider, client credentials, private_key_jwt', keyedReference, reference, 'oidc-provider client credentials')
    versus('machine: plugin, client credentials, private_key_jwt', r.get('plugin client credentials, private_key_jwt'), keyedReference, 'the same at oidc-provider')
    versus('machine: plugin, jwt-bearer', r.get('plugin jwt-bearer'), keyedReference, 'oidc-provider cc, private_key_jwt')
  } finally {
    for (const s of started) await s.stop()
    await idp.close()
  }
}

async function memoryBench (): Promise<void> {
  console.log('\n## memory store')
  const child = forkHere('./memory.ts', [], ['--expose-gc'])
  let result: MemoryResult | { error: string }
  try {
    result = await firstMessage<MemoryResult | { error: string }>(child, 300_000)
  } finally {
    await stopChild(child)
  }
  if ('error' in result) throw new Error(`memory probe: ${result.error}`)
  const mb = (b: number) => `${(b / 1048576).toFixed(1)} MiB`
  const growth = (result.afterSweepBytes - result.baselineBytes) / result.baselineBytes
  const lines: Array<[string, string, string, boolean]> = [
    [`heap per live grant (${result.grants} grants: grant + access + refresh records)`, `${Math.round(result.perGrantBytes)} B`, '<= 1024 B', result.perGrantBytes <= 1024],
    ['heap after expiry + sweep, vs baseline', `${growth >= 0 ? '+' : ''}${(growth * 100).toFixed(1)} % (${mb(result.baselineBytes)} -> ${mb(result.loadedBytes)} -> ${mb(result.afterSweepBytes)})`, '<= +10 %', growth <= 0.1],
    ['event-loop delay p99 during the sweep', `${result.sweepDelayP99Ms.toFixed(1)} ms (max ${result.sweepDelayMaxMs.toFixed(1)} ms, pass ${result.sweepMs.toFixed(0)} ms; idle p99 ${result.idleDelayP99Ms.toFixed(1)} ms)`, '< 20 ms', result.sweepDelayP99Ms < 20],
    ['records left after the sweep', `${result.remaining.grants + result.remaining.accessTokens + result.remaining.refreshTokens}`, '0', result.remaining.grants + result.remaining.accessTokens + result.remaining.refreshTokens === 0]
  ]
  memoryLines.push(...lines)
}

const memoryLines: Array<[string, string, string, boolean]> = []

async function main (): Promise<void> {
  console.log(`fastify-mcp-oauth benchmarks: node ${process.version}, ${DURATION} s per run, ${ROUNDS} rounds (median), ` +
    `${CONNECTIONS} connections, warm-up ${WARMUP} s`)
  if (BASELINE !== undefined) console.log(`A/B: every guard and token server also from BENCH_BASELINE=${BASELINE.root} (${BASELINE.label}); this checkout: ${BASELINE.ours}`)
  if (PROFILE !== undefined) mkdirSync(PROFILE, { recursive: true })
  if (ONLY.has('guard')) await guardBench()
  if (ONLY.has('token')) await tokenBench()
  if (ONLY.has('machine')) await machineBench()
  if (ONLY.has('memory')) await memoryBench()
  console.log('')
  if (rows.length > 0) printTable()
  printAbTable()
  if (memoryLines.length > 0) {
    console.log('')
    printAligned(['memory', 'measured', 'target', 'result'], memoryLines.map(([a, b, c, ok]) => {
      if (!ok) failed = true
      return [a, b, c, ok ? 'pass' : 'FAIL']
    }))
  }
  console.log(failed ? '\nsome targets were missed' : '\nall targets met')
  process.exitCode = failed ? 1 : 0
}

// Interrupted: exit through 'exit', whose handlers kill the servers and redis-server.
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130))

main().catch((err: unknown) => {
  console.error(err)
  process.exitCode = 1
})
