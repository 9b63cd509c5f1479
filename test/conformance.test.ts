/**
 * The official MCP conformance suite (`@modelcontextprotocol/conformance`, `authorization`
 * command, both of its scenarios) against the example server on a loopback port, run with the
 * Node 22 binary of the `node@22` devDependency. See test/helpers/conformance.ts for what the
 * suite checks. The suite drives no browser: it prints an authorization URL and waits for a
 * callback, so this test plays the user, who approves the consent page and logs in at the
 * example's development IdP, exactly as a person would.
 */

import t from 'tap'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildExample } from '../example/app.js'
import { freePort } from './helpers/login.js'
import { Browser } from './helpers/browser.js'
import { NODE22, readChecks, runAuthorizationSuite } from './helpers/conformance.js'

const SCENARIOS = ['authorization-server-metadata-endpoint', 'authorization-code-grant']

t.test('MCP conformance suite: authorization server scenarios', async t => {
  const port = await freePort()
  const callbackPort = await freePort()
  const issuer = `http://127.0.0.1:${port}`
  const redirectUri = `http://127.0.0.1:${callbackPort}/callback`

  // The example as `npm start` runs it without GOOGLE_* / OIDC_*: embedded IdP, public registration.
  const app = await buildExample({ PORT: String(port), HOST: '127.0.0.1' })
  t.teardown(() => app.close())
  await app.listen({ port, host: '127.0.0.1' })

  // The suite needs a client registered beforehand, with its callback as redirect URI.
  const metadata = await (await fetch(`${issuer}/.well-known/oauth-authorization-server`)).json() as Record<string, unknown>
  t.equal(typeof metadata.registration_endpoint, 'string', 'dynamic registration is advertised')
  const registration = await fetch(metadata.registration_endpoint as string, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ client_name: 'MCP conformance suite', redirect_uris: [redirectUri], token_endpoint_auth_method: 'none' })
  })
  t.equal(registration.status, 201, 'the suite\'s client is registered')
  const { client_id: clientId } = await registration.json() as { client_id: string }

  const outputDir = await mkdtemp(join(tmpdir(), 'mcp-conformance-'))
  t.teardown(() => rm(outputDir, { recursive: true, force: true }))

  let consentSeen = false
  const suite = runAuthorizationSuite({
    issuer,
    clientId,
    callbackPort,
    outputDir,
    timeoutMs: 90_000,
    onAuthorizationUrl: async (url) => {
      const browser = new Browser()
      const page = await browser.drive(url, {
        stopAt: u => u.href.startsWith(redirectUri),
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
      const res = await fetch(page.stoppedAt as URL, { signal: AbortSignal.timeout(10_000) })
      await res.body?.cancel()
    }
  })
  t.teardown(suite.kill)
  const run = await suite.done

  t.comment(`tests run on Node ${process.version}; the suite ran on ${NODE22}`)
  if (run.summary !== '') t.comment(run.summary)
  if (run.code !== 0 || run.summary === '') t.comment(`suite stdout:\n${run.stdout}\nsuite stderr:\n${run.stderr}`)
  t.equal(run.browserError === undefined ? undefined : String(run.browserError), undefined, 'the login went through')
  t.notOk(run.timedOut, 'the suite finished in time')
  t.equal(run.code, 0, 'the suite exited 0')
  t.ok(consentSeen, 'the user approved on the consent page')

  const checks = await readChecks(outputDir)
  t.same(Object.keys(run.scenarios).sort(), [...SCENARIOS].sort(), 'both scenarios ran')
  for (const scenario of SCENARIOS) {
    t.same(run.scenarios[scenario], { passed: run.scenarios[scenario]?.passed, failed: 0 }, `${scenario}: nothing failed`)
    const list = checks[scenario] ?? []
    t.ok(list.length > 0, `${scenario}: checks were saved`)
    for (const check of list) {
      t.equal(check.status, 'SUCCESS', `${scenario} / ${check.id}: ${check.description}${check.errorMessage === undefined ? '' : ` (${check.errorMessage})`}`)
    }
  }
})
