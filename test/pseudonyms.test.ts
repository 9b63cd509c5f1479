import t from 'tap'
import { createHash } from 'node:crypto'
import { hashUserId } from '../lib/security/audit.js'
import { Auditor } from '../lib/security/audit.js'
import { buildApp } from './helpers/app.js'

// Finding 12: user pseudonyms in the audit log and spans are keyed with the deployment secret.
const SECRET_A = 'deployment-secret-a-deployment-secret-a'
const SECRET_B = 'deployment-secret-b-deployment-secret-b'

async function pseudonymIn (t: { teardown (fn: () => unknown): void }, secret: string, userId: string): Promise<string> {
  const { app } = await buildApp(t, { secret })
  return app.mcpOAuth.auditor.pseudonym(userId)
}

t.test('pseudonyms are stable within a deployment and differ between deployments', async t => {
  const a1 = await pseudonymIn(t, SECRET_A, '12345')
  const a2 = await pseudonymIn(t, SECRET_A, '12345')
  const b = await pseudonymIn(t, SECRET_B, '12345')
  t.equal(a1, a2, 'same secret, same pseudonym (across restarts and replicas)')
  t.not(a1, b, 'another deployment, another pseudonym')
  t.match(a1, /^[A-Za-z0-9_-]{16}$/)
  const { app } = await buildApp(t, { cookieSecret: SECRET_A })
  t.equal(app.mcpOAuth.auditor.pseudonym('12345'), a1, 'cookieSecret, the former name of secret, keys the same')
})

t.test('a pseudonym cannot be reversed by hashing candidate ids without the secret', async t => {
  const target = await pseudonymIn(t, SECRET_A, '4242')
  // What someone holding the log can compute for every small numeric id without the secret: the
  // old unkeyed construction, and HMACs under guessable keys.
  const unkeyed = (id: string) => createHash('sha256').update('mcp-oauth-user\0' + id).digest('base64url').slice(0, 16)
  let hits = 0
  for (let id = 0; id < 10_000; id++) {
    const s = String(id)
    if (unkeyed(s) === target || hashUserId(s, '') === target || hashUserId(s, SECRET_A) === target) hits++
  }
  t.equal(hits, 0, 'no candidate id maps to the pseudonym without the derived key')
})

t.test('the audit log carries the keyed pseudonym, never the id', async t => {
  const lines: Array<Record<string, unknown>> = []
  const logger = { debug () {}, info (obj: object) { lines.push(obj as Record<string, unknown>) }, warn () {} }
  const key = Buffer.alloc(32, 7)
  const auditor = new Auditor(logger, undefined, key)
  auditor.emit('login_succeeded', { clientId: 'c', userId: 'alice@example.com', provider: 'oidc' })
  t.equal(lines[0]?.userId, hashUserId('alice@example.com', key))
  t.equal(lines[0]?.userId, auditor.pseudonym('alice@example.com'))
  t.notMatch(JSON.stringify(lines), 'alice')
})
