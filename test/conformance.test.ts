/**
 * The official MCP conformance suite (`@modelcontextprotocol/conformance`, `authorization`
 * command, both of its scenarios) against the example server on a loopback port, run with the
 * Node 22 binary of the `node@22` devDependency. See test/helpers/conformance.ts for what the
 * suite checks.
 *
 * The command runs once for every `--spec-version` it accepts, aliases included (asked of the
 * suite itself, so a newer suite's revisions join by themselves), each with and without
 * `--resource` (the example's MCP endpoint), a few at a time, each with its own registered client
 * and callback port. A last run with a resource the server does not protect must fail: it shows
 * that `--resource` reaches the server and that a failing run is seen as one.
 *
 * The suite drives no browser: it prints an authorization URL and waits for a callback, so this
 * test plays the user, who approves the consent page and logs in at the example's development
 * IdP, exactly as a person would.
 */

import t from 'tap'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildExample } from '../example/app.js'
import { freePort } from './helpers/login.js'
import { Browser, decodeEntities } from './helpers/browser.js'
import { acceptedSpecVersions, NODE22, readChecks, runAuthorizationSuite, tally, type Check, type SuiteRun, type Tally } from './helpers/conformance.js'

const SCENARIOS = ['authorization-server-metadata-endpoint', 'authorization-code-grant']
/** Suite processes at once: enough to overlap their start-up, few enough for a small machine. */
const CONCURRENT_RUNS = 3

interface RunSpec {
  specVersion: string
  resource: string | undefined
  /** The server refuses the request: the user follows the error page's link back to the client. */
  refused?: boolean
}

interface RunResult {
  spec: RunSpec
  run: SuiteRun
  checks: Record<string, Check[]>
  tally: Tally
  consentSeen: boolean
  /** The status of the error page the user saw, for a refused request. */
  errorPageStatus?: number
  seconds: number
}

function label (spec: RunSpec): string {
  return `spec ${spec.specVersion}, ${spec.resource === undefined ? 'no --resource' : `--resource ${spec.resource}`}`
}

/** Runs `tasks` with at most `limit` of them in flight; results in the order of `tasks`. */
async function bounded<T> (limit: number, tasks: Array<() => Promise<T>>): Promise<T[]> {
  const results: T[] = new Array(tasks.length)
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < tasks.length) {
      const index = next++
      results[index] = await (tasks[index] as () => Promise<T>)()
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker))
  return results
}

t.test('MCP conformance suite: authorization server scenarios, every spec version, with and without --resource', async t => {
  const port = await freePort()
  const issuer = `http://127.0.0.1:${port}`
  const resource = `${issuer}/mcp`

  const versions = await acceptedSpecVersions()
  t.ok(versions.dated.length > 0 && versions.dated.every(v => /^\d{4}-\d{2}-\d{2}$/.test(v)), `the suite accepts dated revisions: ${versions.dated.join(', ')}`)
  for (const [alias, target] of Object.entries(versions.aliases)) {
    t.ok(versions.dated.includes(target), `the alias ${alias} stands for an accepted revision (${target})`)
  }

  // The example as `npm start` runs it without GOOGLE_* / OIDC_*: embedded IdP, public registration.
  const app = await buildExample({ PORT: String(port), HOST: '127.0.0.1' })
  t.teardown(() => app.close())
  await app.listen({ port, host: '127.0.0.1' })
  t.equal((app.server.address() as { port: number }).port, port, 'the example listens on its issuer\'s port')

  const metadata = await (await fetch(`${issuer}/.well-known/oauth-authorization-server`)).json() as Record<string, unknown>
  t.equal(typeof metadata.registration_endpoint, 'string', 'dynamic registration is advertised')
  const prm = await (await fetch(`${issuer}/.well-known/oauth-protected-resource/mcp`)).json() as Record<string, unknown>
  t.equal(prm.resource, resource, 'the example\'s MCP endpoint is its protected resource')

  const outputRoot = await mkdtemp(join(tmpdir(), 'mcp-conformance-'))
  t.teardown(() => rm(outputRoot, { recursive: true, force: true }))
  const kills: Array<() => void> = []
  t.teardown(() => { for (const kill of kills) kill() })

  /** One suite run: its own client (the suite does no registration), callback port and output directory. */
  /**
   * The browser's last step, to the suite's callback server. The suite prints the authorization URL
   * before its callback server listens, and an error page comes back at once: a refused connection
   * is retried for a bounded while, as a user reloading the page would.
   */
  const deliver = async (url: string | URL): Promise<void> => {
    for (let attempt = 1; ; attempt++) {
      try {
        const res = await fetch(url, { signal: AbortSignal.timeout(10_000) })
        await res.body?.cancel()
        return
      } catch (err) {
        if (attempt >= 40 || (err as { cause?: { code?: string } }).cause?.code !== 'ECONNREFUSED') throw err
        await new Promise(resolve => setTimeout(resolve, 250))
      }
    }
  }

  const runOnce = async (spec: RunSpec, index: number): Promise<RunResult> => {
    const callbackPort = await freePort()
    const redirectUri = `http://127.0.0.1:${callbackPort}/callback`
    const registration = await fetch(metadata.registration_endpoint as string, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ client_name: `MCP conformance suite, ${label(spec)}`, redirect_uris: [redirectUri], token_endpoint_auth_method: 'none' })
    })
    if (registration.status !== 201) throw new Error(`registration for ${label(spec)}: HTTP ${registration.status} ${await registration.text()}`)
    const { client_id: clientId } = await registration.json() as { client_id: string }
    const outputDir = join(outputRoot, String(index))

    let consentSeen = false
    let errorPageStatus: number | undefined
    const started = performance.now()
    const suite = runAuthorizationSuite({
      issuer,
      clientId,
      callbackPort,
      outputDir,
      specVersion: spec.specVersion,
      ...(spec.resource === undefined ? {} : { resource: spec.resource }),
      timeoutMs: 90_000,
      onAuthorizationUrl: async (url) => {
        const browser = new Browser()
        const stopAt = (u: URL): boolean => u.href.startsWith(redirectUri)
        if (spec.refused === true) {
          // The server does not send an unapproved client's errors back by itself (RFC 9700
          // §4.11.2): it shows them, with a link back that the user follows.
          const page = await browser.get(url, { stopAt })
          errorPageStatus = page.status
          const href = /<a href="([^"]*)"[^>]*>Return to the application<\/a>/.exec(page.body)?.[1]
          if (href === undefined || !stopAt(new URL(decodeEntities(href)))) throw new Error(`no link back to the client on the page (HTTP ${page.status})`)
          await deliver(decodeEntities(href))
          return
        }
        const page = await browser.drive(url, {
          stopAt,
          fields: form => {
            if (form.names.has('decision')) {
              // The consent page: its first button (what the browser submits) must be Approve.
              consentSeen = true
              if (form.submitters[0]?.value !== 'approve') throw new Error('the consent page\'s first button is not Approve')
              return undefined
            }
            return Object.fromEntries(Object.entries({ login: 'conformance', password: 'any' }).filter(([name]) => form.names.has(name)))
          }
        })
        // The browser lands on the suite's callback server.
        await deliver(page.stoppedAt as URL)
      }
    })
    kills.push(suite.kill)
    const run = await suite.done
    const seconds = (performance.now() - started) / 1000
    const checks = await readChecks(outputDir).catch(() => ({}))
    const result: RunResult = { spec, run, checks, tally: tally(Object.values(checks).flat()), consentSeen, seconds }
    if (errorPageStatus !== undefined) result.errorPageStatus = errorPageStatus
    return result
  }

  const specs: RunSpec[] = [...versions.dated, ...Object.keys(versions.aliases)]
    .flatMap(specVersion => [{ specVersion, resource: undefined }, { specVersion, resource }])
  const control: RunSpec = { specVersion: versions.dated.at(-1) as string, resource: `${issuer}/not-protected-here`, refused: true }
  const started = performance.now()
  const results = await bounded(CONCURRENT_RUNS, [...specs, control].map((spec, index) => async () => await runOnce(spec, index)))
  const controlResult = results.pop() as RunResult

  t.comment(`tests run on Node ${process.version}; the suite ran on ${NODE22}`)
  for (const { spec, tally: n, seconds } of results) {
    t.comment(`${label(spec)}: ${n.passed} passed, ${n.failed} failed, ${n.warnings} warnings, ${seconds.toFixed(1)} s`)
  }
  t.comment(`${results.length + 1} runs, ${CONCURRENT_RUNS} at a time: ${((performance.now() - started) / 1000).toFixed(1)} s`)

  for (const { spec, run, checks, tally: n, consentSeen } of results) {
    t.test(label(spec), async t => {
      if (run.code !== 0 || run.summary === '') t.comment(`suite stdout:\n${run.stdout}\nsuite stderr:\n${run.stderr}`)
      t.equal(run.browserError === undefined ? undefined : String(run.browserError), undefined, 'the login went through')
      t.notOk(run.timedOut, 'the suite finished in time')
      t.equal(run.code, 0, 'the suite exited 0')
      t.ok(consentSeen, 'the user approved on the consent page')
      t.same(Object.keys(run.scenarios).sort(), [...SCENARIOS].sort(), 'both scenarios ran')
      t.same(Object.keys(checks).sort(), [...SCENARIOS].sort(), 'both scenarios saved their checks')
      t.same({ failed: n.failed, warnings: n.warnings, other: n.other }, { failed: 0, warnings: 0, other: 0 }, `every check passed (${n.passed})`)
      for (const scenario of SCENARIOS) {
        t.same(run.scenarios[scenario], { passed: run.scenarios[scenario]?.passed, failed: 0 }, `${scenario}: nothing failed`)
        const list = checks[scenario] ?? []
        t.ok(list.length > 0, `${scenario}: checks were saved`)
        for (const check of list) {
          t.equal(check.status, 'SUCCESS', `${scenario} / ${check.id}: ${check.description}${check.errorMessage === undefined ? '' : ` (${check.errorMessage})`}`)
        }
      }
      // The suite's own record of the authorization request: the flag reached the wire, or nothing did.
      const grant = checks['authorization-code-grant']?.[0]?.details as { authorizationRequest?: string } | undefined
      const sent = new URL(grant?.authorizationRequest ?? 'invalid:').searchParams.getAll('resource')
      t.same(sent, spec.resource === undefined ? [] : [spec.resource], 'the authorization request carried the resource given, and only then')
    })
  }

  t.test(`control: ${label(control)}`, async t => {
    const { run, checks } = controlResult
    t.equal(controlResult.errorPageStatus, 400, 'the user saw an error page')
    t.equal(run.browserError === undefined ? undefined : String(run.browserError), undefined, 'and followed its link back to the callback')
    t.notOk(run.timedOut, 'the suite finished in time')
    t.equal(run.code, 1, 'the suite exited 1')
    t.same(run.scenarios['authorization-code-grant'], { passed: 0, failed: 1 }, 'the code grant failed')
    const grant = checks['authorization-code-grant']?.[0]
    t.match(grant?.errorMessage, /^Authorization error: invalid_target /, 'because the server refused the resource (RFC 8707 invalid_target)')
    t.notOk(controlResult.consentSeen, 'before any consent page')
  })
})
