import t from 'tap'
import { s256 } from '../lib/core/pkce.js'
import { buildApp } from './helpers/app.js'

/**
 * Issue 15, the browser side: errors before consent (finding 6), remembered consent and native
 * clients (9), where the consent page says the user goes (13), and a consent form used twice (15).
 */

const VERIFIER = 'hardening-browser-verifier-' + 'q'.repeat(30)
const WEB_REDIRECT = 'https://app.example.com/cb'

// ---- finding 13: where the consent page says the user goes ---------------------------------

t.test('finding 13: the consent page names a private-use scheme as an app, never its authority as a host', async t => {
  const { app } = await buildApp(t, {
    clients: [
      { client_id: 'evil-native', client_name: 'Google Drive', redirect_uris: ['com.evil.app://accounts.google.com/cb'] },
      { client_id: 'bare-scheme', redirect_uris: ['com.example.app:/oauth'] },
      { client_id: 'cli', redirect_uris: ['http://127.0.0.1/callback'] },
      { client_id: 'web', redirect_uris: [WEB_REDIRECT] }
    ]
  })
  const consent = async (clientId: string, redirect: string) => (await app.inject(`/oauth/authorize?${new URLSearchParams({
    response_type: 'code', client_id: clientId, redirect_uri: redirect, code_challenge: s256(VERIFIER), code_challenge_method: 'S256'
  })}`))
  const evil = await consent('evil-native', 'com.evil.app://accounts.google.com/cb')
  t.equal(evil.statusCode, 200)
  t.notMatch(evil.body, 'accounts.google.com', 'the authority is not presented as a destination')
  t.match(evil.body, /the app <strong>com\.evil\.app<\/strong>/, 'the scheme is named as the application')
  const bare = await consent('bare-scheme', 'com.example.app:/oauth')
  t.match(bare.body, /the app <strong>com\.example\.app<\/strong>/)
  t.notMatch(bare.body, 'com.example.app:</strong>')
  const cli = await consent('cli', 'http://127.0.0.1:40123/callback')
  t.match(cli.body, /an application on this computer/, 'loopback: an application on this computer')
  const web = await consent('web', WEB_REDIRECT)
  t.match(web.body, /sent to <strong>app\.example\.com<\/strong>/, 'https: the host, as before')
})
