/**
 * Runs the official MCP conformance suite's `authorization` command
 * (`@modelcontextprotocol/conformance`, a devDependency) against an authorization server.
 *
 * The suite needs Node 22 (it imports `fs.globSync`); the `node@22` devDependency ships that
 * binary in node_modules/node/bin/node, which is used here by its path.
 *
 * What the command does, run without `--scenario` (both scenarios, in order):
 *
 * - `authorization-server-metadata-endpoint`: GET `<origin>/.well-known/oauth-authorization-server<path>`
 *   (then the openid-configuration variants); 200, `application/json`, `issuer` equal to the `--url`
 *   given, `authorization_endpoint` and `token_endpoint`, `response_types_supported` with `code`,
 *   `code_challenge_methods_supported` with `S256`; plus a second check (a WARNING when missing)
 *   that `client_id_metadata_document_supported` is true.
 * - `authorization-code-grant` (needs `--client-id`, a client already registered with the redirect
 *   URI `http://127.0.0.1:<port>/callback`; the suite does no registration itself): it starts a
 *   callback server on that port, prints an authorization URL (PKCE S256, random state, no scope)
 *   and waits up to 5 minutes for a person to log in with a browser. The callback must carry
 *   exactly one state (matching) and one non-empty code, no error, and an `iss` equal to the
 *   metadata issuer when present. It then redeems the code (auth method `none` without a secret)
 *   and wants 200, `application/json`, `Cache-Control: no-store`, `access_token` and `token_type`.
 *   Hence the public client: given `--client-secret` too, the suite still sends no secret whenever
 *   the server's `token_endpoint_auth_methods_supported` lists `none` (ours does, for public
 *   clients), and a confidential client that does not authenticate is refused (401
 *   invalid_client, OAuth 2.1 §3.2.1), which the suite then reports as a failed grant.
 *
 * `--resource <uri>` adds that RFC 8707 `resource` parameter to both the authorization request
 * and the token request; without it neither carries one.
 *
 * `--spec-version <v>` (the dated revisions, and `draft` as an alias of the newest) keeps the
 * scenarios that apply at that revision and drops the checks introduced after it: the CIMD check
 * is from 2025-11-25, so earlier revisions run one metadata check, not two. Without the option
 * nothing is dropped.
 *
 * The suite drives no browser: `onAuthorizationUrl` plays the person, and must end by requesting
 * the callback URL so the suite's callback server receives it.
 */

import { spawn, type ChildProcessByStdio } from 'node:child_process'
import type { Readable } from 'node:stream'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { readdir, readFile } from 'node:fs/promises'

const require = createRequire(import.meta.url)

/** The Node 22 binary of the `node@22` devDependency. */
export const NODE22 = join(dirname(require.resolve('node/package.json')), 'bin', 'node')
/** The conformance suite's command-line entry point. */
export const CONFORMANCE_CLI = join(dirname(require.resolve('@modelcontextprotocol/conformance/package.json')), 'dist', 'index.js')

export interface SuiteOptions {
  /** The authorization server's issuer identifier (the suite's --url). */
  issuer: string
  /** A client registered with the redirect URI http://127.0.0.1:<callbackPort>/callback. */
  clientId: string
  /** The suite's --spec-version; none: the suite's default (every check). */
  specVersion?: string
  /** The suite's --resource: the RFC 8707 resource indicator both requests carry. */
  resource?: string
  callbackPort: number
  /** Where the suite writes one checks.json per scenario. */
  outputDir: string
  /** Hard limit for the whole run; the process is killed after it. */
  timeoutMs: number
  /** Plays the user: log in and approve at this URL, then deliver the redirect to the callback. */
  onAuthorizationUrl: (url: URL) => Promise<void>
}

export interface SuiteRun {
  code: number | null
  signal: NodeJS.Signals | null
  timedOut: boolean
  stdout: string
  stderr: string
  /** The error `onAuthorizationUrl` threw, if any (the suite is killed then). */
  browserError?: unknown
  /** The "=== SUMMARY ===" block the suite prints at the end. */
  summary: string
  /** Per scenario, from its summary line. */
  scenarios: Record<string, { passed: number, failed: number }>
}

export interface Check {
  id: string
  name: string
  status: 'SUCCESS' | 'FAILURE' | 'WARNING' | 'SKIPPED' | 'INFO'
  description: string
  errorMessage?: string
  details?: unknown
}

/**
 * Starts the suite's CLI with `args`. Without what tap adds to follow its child processes, since
 * the suite is not under test: coverage collection, and the process-info hook in NODE_OPTIONS,
 * whose loader thread and source-map bookkeeping more than double the CPU time of every run. tap
 * puts that hook back into the environment of every process spawned here, so env(1) removes it
 * on the way; env then becomes Node (exec), so killing the child kills the suite.
 */
function spawnSuite (args: string[]): ChildProcessByStdio<null, Readable, Readable> {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' }
  delete env.NODE_V8_COVERAGE
  return spawn('/usr/bin/env', ['-u', 'NODE_OPTIONS', NODE22, CONFORMANCE_CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env })
}

/** Runs `conformance authorization` and resolves when it has exited (or was killed). */
export function runAuthorizationSuite (opts: SuiteOptions): { done: Promise<SuiteRun>, kill: () => void } {
  const child = spawnSuite([
    'authorization',
    '--url', opts.issuer,
    '--client-id', opts.clientId,
    '--port', String(opts.callbackPort),
    '--output-dir', opts.outputDir,
    ...(opts.specVersion === undefined ? [] : ['--spec-version', opts.specVersion]),
    ...(opts.resource === undefined ? [] : ['--resource', opts.resource])
  ])

  let stdout = ''
  let stderr = ''
  let timedOut = false
  let browserError: unknown
  let browsing = false
  const kill = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
  const timer = setTimeout(() => { timedOut = true; kill() }, opts.timeoutMs)

  child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk
    if (browsing) return
    // The suite prints the authorization URL on the line after this prompt.
    const match = /Access the following URL in your browser[^\n]*\n(\S+)\n/.exec(stdout)
    if (match === null) return
    browsing = true
    opts.onAuthorizationUrl(new URL(match[1] as string)).catch((err: unknown) => {
      browserError = err
      kill()
    })
  })

  const done = new Promise<SuiteRun>((resolve, reject) => {
    child.once('error', (err) => { clearTimeout(timer); reject(err) })
    child.once('close', (code, signal) => {
      clearTimeout(timer)
      const at = stdout.indexOf('=== SUMMARY ===')
      const summary = at === -1 ? '' : stdout.slice(at).trim()
      const scenarios: SuiteRun['scenarios'] = {}
      for (const m of summary.matchAll(/^[✓✗] (\S+): (\d+) passed, (\d+) failed$/gmu)) {
        scenarios[m[1] as string] = { passed: Number(m[2]), failed: Number(m[3]) }
      }
      const run: SuiteRun = { code, signal, timedOut, stdout, stderr, summary, scenarios }
      if (browserError !== undefined) run.browserError = browserError
      resolve(run)
    })
  })
  return { done, kill }
}

/** The checks the suite saved for each scenario (directories `authorization-server-<scenario>-<time>`). */
export async function readChecks (outputDir: string): Promise<Record<string, Check[]>> {
  const result: Record<string, Check[]> = {}
  for (const entry of await readdir(outputDir, { withFileTypes: true })) {
    const match = /^authorization-server-(.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$/.exec(entry.name)
    if (!entry.isDirectory() || match === null) continue
    result[match[1] as string] = JSON.parse(await readFile(join(outputDir, entry.name, 'checks.json'), 'utf8')) as Check[]
  }
  return result
}

/** The values `authorization --spec-version` accepts, dated revisions first, then the aliases. */
export interface SpecVersions {
  dated: string[]
  /** Alias -> the dated revision it stands for. */
  aliases: Record<string, string>
}

/**
 * Asks the suite which spec versions its `authorization` command accepts. The suite has no
 * command that lists them; it names them when refusing an unknown one, which it does before it
 * contacts the `--url` (a port nobody listens on, to be sure).
 */
export async function acceptedSpecVersions (): Promise<SpecVersions> {
  const child = spawnSuite(['authorization', '--url', 'http://127.0.0.1:9', '--spec-version', 'no-such-version'])
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
  let output = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => { output += chunk })
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => { output += chunk })
  await new Promise<void>((resolve, reject) => {
    child.once('error', reject)
    child.once('close', () => { resolve() })
  }).finally(() => { clearTimeout(timer) })
  const match = /^Valid versions: (.+?)(?: \((.*)\))?$/m.exec(output)
  if (match === null || match[1] === '') throw new Error(`the suite did not list its spec versions:\n${output}`)
  const aliases: Record<string, string> = {}
  for (const alias of (match[2] ?? '').matchAll(/'([^']+)' as an alias for (\S+)/g)) {
    aliases[alias[1] as string] = alias[2] as string
  }
  return { dated: (match[1] as string).split(', '), aliases }
}

/** What a run's checks came to, counted the way the suite counts them. */
export interface Tally { passed: number, failed: number, warnings: number, other: number }

export function tally (checks: Check[]): Tally {
  const result: Tally = { passed: 0, failed: 0, warnings: 0, other: 0 }
  for (const check of checks) {
    if (check.status === 'SUCCESS') result.passed++
    else if (check.status === 'FAILURE') result.failed++
    else if (check.status === 'WARNING') result.warnings++
    else result.other++
  }
  return result
}
