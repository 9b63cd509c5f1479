#!/usr/bin/env node
import { realpathSync } from 'node:fs'
import type { LookupFunction } from 'node:net'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { BUDGET_TIMEOUTS, diagnose, type Check, type Status } from './doctor.js'
import { isKeyKind, keyLines, KEY_KINDS, type KeyKind } from './generate-key.js'

/** The package's bin: `fastify-mcp-oauth doctor <mcp-url>` and `fastify-mcp-oauth generate-key`. */

export interface Io {
  out (text: string): void
  err (text: string): void
  /** Name resolution and extra CA certificates for doctor's requests (tests point names at loopback). */
  lookup?: LookupFunction
  ca?: string | Buffer
}

export const USAGE = `Usage:
  fastify-mcp-oauth doctor <mcp-url> [--origin <browser origin>] [--timeout <ms>] [--json]
      Runs, from outside, the discovery an MCP client runs before a login (MCP 2025-11-25):
      the unauthenticated request and its challenge, protected resource and authorization
      server metadata, https, PKCE, registration, iss, JWKS, CORS for --origin, clock skew.
      One line per check (PASS, WARN, FAIL, SKIP); exit status 1 when a check fails.
      --timeout  milliseconds per request (default 5000; the run takes at most ${BUDGET_TIMEOUTS} of them)
      --origin   a browser origin (https://app.example.com) whose CORS access is checked
      --json     one JSON document instead of lines
      Private CAs: NODE_EXTRA_CA_CERTS=/path/ca.pem.
  fastify-mcp-oauth generate-key [--kind encryption|secret|cookie|pseudonym ...]
      Prints fresh keys as the options and the examples' variables take them (default: an
      encryption key and a deployment secret; cookie and pseudonym keys derive from the secret).
  fastify-mcp-oauth --help`

const DEFAULT_TIMEOUT_MS = 5000
const MAX_TIMEOUT_MS = 120_000
const EXIT = { ok: 0, failed: 1, usage: 2 }

/** Runs one command line; resolves to the exit status. Never throws for bad input. */
export async function run (argv: readonly string[], io: Io): Promise<number> {
  const [command, ...rest] = argv
  if (command === '--help' || command === '-h' || command === 'help') {
    io.out(USAGE)
    return EXIT.ok
  }
  if (command === 'doctor') return doctor(rest, io)
  if (command === 'generate-key') return generate(rest, io)
  return usage(io, command === undefined ? 'no command given' : `unknown command ${JSON.stringify(command)}`)
}

function usage (io: Io, problem: string): number {
  io.err(`fastify-mcp-oauth: ${problem}\n\n${USAGE}`)
  return EXIT.usage
}

type Parsed = { ok: true, values: Record<string, string | boolean | string[] | undefined>, positionals: string[] } | { ok: false, problem: string }

function parse (args: readonly string[], options: NonNullable<Parameters<typeof parseArgs>[0]>['options']): Parsed {
  try {
    const { values, positionals } = parseArgs({ args: [...args], options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true })
    return { ok: true, values, positionals }
  } catch (err) {
    // Node's message starts with the sentence that matters ("Unknown option '--x'.").
    return { ok: false, problem: String((err as Error).message).split('. ')[0] as string }
  }
}

async function doctor (args: readonly string[], io: Io): Promise<number> {
  const parsed = parse(args, { origin: { type: 'string' }, timeout: { type: 'string' }, json: { type: 'boolean' } })
  if (!parsed.ok) return usage(io, parsed.problem)
  const { values, positionals } = parsed
  if (values.help === true) {
    io.out(USAGE)
    return EXIT.ok
  }
  if (positionals.length !== 1) return usage(io, positionals.length === 0 ? 'doctor needs the MCP endpoint\'s URL' : 'doctor takes one URL')
  const mcp = httpUrl(positionals[0] as string)
  if (mcp === undefined || mcp.hash !== '') return usage(io, `${JSON.stringify(positionals[0])} is not an http(s) URL without a fragment`)
  const rawTimeout = values.timeout as string | undefined ?? String(DEFAULT_TIMEOUT_MS)
  const timeoutMs = Number(rawTimeout)
  if (!/^\d{1,6}$/.test(rawTimeout) || timeoutMs < 1 || timeoutMs > MAX_TIMEOUT_MS) return usage(io, `--timeout takes milliseconds from 1 to ${MAX_TIMEOUT_MS}, not ${JSON.stringify(rawTimeout)}`)
  const origin = values.origin as string | undefined
  if (origin !== undefined && httpUrl(origin)?.origin !== origin.replace(/\/$/, '')) {
    return usage(io, `--origin takes a browser origin such as https://app.example.com, not ${JSON.stringify(origin)}`)
  }
  const checks = await diagnose(mcp, {
    timeoutMs,
    ...(origin !== undefined ? { origin: origin.replace(/\/$/, '') } : {}),
    ...(io.lookup !== undefined ? { lookup: io.lookup } : {}),
    ...(io.ca !== undefined ? { ca: io.ca } : {})
  })
  const counts = { pass: 0, warn: 0, fail: 0, skip: 0 } satisfies Record<Status, number>
  for (const c of checks) counts[c.status]++
  if (values.json === true) io.out(JSON.stringify({ url: mcp.href, checks, summary: counts }, null, 2))
  else io.out(report(mcp, checks, counts))
  return counts.fail > 0 ? EXIT.failed : EXIT.ok
}

function httpUrl (value: string): URL | undefined {
  try {
    const url = new URL(value)
    return url.protocol === 'https:' || url.protocol === 'http:' ? url : undefined
  } catch {
    return undefined
  }
}

/** One line per check, then the counts. */
export function report (mcp: URL, checks: readonly Check[], counts: Record<Status, number>): string {
  const width = Math.max(...checks.map(c => c.id.length))
  const lines = checks.map(c => `${c.status.toUpperCase().padEnd(4)}  ${c.id.padEnd(width)}  ${c.detail}${c.impact === undefined ? '' : ` -> ${c.impact}`}`)
  return [`doctor ${mcp.href}`, ...lines, `${counts.fail} failed, ${counts.warn} warned, ${counts.pass} passed, ${counts.skip} skipped`].join('\n')
}

function generate (args: readonly string[], io: Io): number {
  const parsed = parse(args, { kind: { type: 'string', multiple: true } })
  if (!parsed.ok) return usage(io, parsed.problem)
  if (parsed.values.help === true) {
    io.out(USAGE)
    return EXIT.ok
  }
  if (parsed.positionals.length > 0) return usage(io, `generate-key takes no arguments, only --kind (got ${JSON.stringify(parsed.positionals[0])})`)
  const kinds = (parsed.values.kind ?? []) as string[]
  const unknown = kinds.find(k => !isKeyKind(k))
  if (unknown !== undefined) return usage(io, `--kind is one of ${KEY_KINDS.join(', ')}, not ${JSON.stringify(unknown)}`)
  io.out(keyLines(kinds as KeyKind[], new Date()).join('\n'))
  return EXIT.ok
}

/** Run as the bin (directly or through a symlink such as node_modules/.bin), not when imported. */
const invoked = process.argv[1]
if (invoked !== undefined && realpathSync(invoked) === fileURLToPath(import.meta.url)) {
  run(process.argv.slice(2), { out: text => process.stdout.write(text + '\n'), err: text => process.stderr.write(text + '\n') })
    .then(code => { process.exitCode = code }, () => { process.exitCode = EXIT.failed })
}
