import t from 'tap'
import { MemoryStore, OAuthError } from '../lib/index.js'
import { Browser } from './helpers/browser.js'
import { authorizeUrl, registerClient, startLogin } from './helpers/login.js'
import { CODE_VERIFIER as VERIFIER } from './helpers/codes.js'

// The consent form's own refusals get their own pages; a failure of the client lookup behind it
// (a client metadata document that no longer loads, a store that refuses) is the scope's error page.

/** A memory store whose client lookups throw `failing` once it is set. */
class FailingLookups extends MemoryStore {
  failing: Error | undefined
  override async getClient (clientId: string, now: number) {
    if (this.failing !== undefined) throw this.failing
    return super.getClient(clientId, now)
  }
}

/** The plugin with a consent form shown in a browser; `submit()` sends it back approved. */
async function shownForm (t: Parameters<typeof startLogin>[0]) {
  const store = new FailingLookups()
  const h = await startLogin(t, { store })
  const client = await registerClient(h)
  const browser = new Browser()
  const page = await browser.get(authorizeUrl(h, client.client_id as string, VERIFIER))
  const fields: Record<string, string> = Object.fromEntries(page.forms()[0]?.fields ?? [])
  const submit = () => browser.post(`${h.issuer}/oauth/consent`, { ...fields, decision: 'approve' })
  return { store, clientId: client.client_id as string, submit }
}

t.test('a client lookup that fails with an OAuth error at the consent form: the refusal page, not "Unknown application"', async t => {
  const form = await shownForm(t)
  form.store.failing = new OAuthError('invalid_client', 'The client metadata document could not be loaded', { statusCode: 401 })
  const res = await form.submit()
  t.equal(res.status, 401)
  t.match(res.body, /Request refused/)
  t.match(res.body, /The client metadata document could not be loaded/)
  t.notMatch(res.body, /Unknown application/)
})

t.test('a client that is gone by the time the form comes back: "Unknown application"', async t => {
  const form = await shownForm(t)
  await form.store.deleteClient(form.clientId)
  const res = await form.submit()
  t.equal(res.status, 400)
  t.match(res.body, /Unknown application/)
})
