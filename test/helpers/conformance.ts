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
 *   callback server on that port, prints an authorization URL (PKCE S256, random state, no scope,
 *   no resource) and waits up to 5 minutes for a person to log in with a browser. The callback must
 *   carry exactly one state (matching) and one non-empty code, no error, and an `iss` equal to the
 *   metadata issuer when present. It then redeems the code (auth method `none` without a secret)
 *   and wants 200, `application/json`, `Cache-Control: no-store`, `access_token` and `token_type`.
 *
 * The suite drives no browser: `onAuthorizationUrl` plays the person, and must end by requesting
 * the callback URL so the suite's callback server receives it.
 */

import { spawn } from 'node:child_process'
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

/** The environment of the suite: ours, less coverage collection (the suite is not under test). */
function suiteEnv (): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' }
  delete env.NODE_V8_COVERAGE
  return env
}

/** Runs `conformance authorization` and resolves when it has exited (or was killed). */
export function runAuthorizationSuite (opts: SuiteOptions): { done: Promise<SuiteRun>, kill: () => void } {
  const child = spawn(NODE22, [
    CONFORMANCE_CLI, 'authorization',
    '--url', opts.issuer,
    '--client-id', opts.clientId,
    '--port', String(opts.callbackPort),
    '--output-dir', opts.outputDir
  ], { stdio: ['ignore', 'pipe', 'pipe'], env: suiteEnv() })

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
