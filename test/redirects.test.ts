import t from 'tap'
import { createServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { s256 } from '../lib/oauth/pkce.js'
import { checkRedirectUri, DEFAULT_CUSTOM_SCHEMES, matchRedirectUri } from '../lib/oauth/redirect.js'
import { buildApp } from './helpers/app.js'
import { selfSignedCert } from './helpers/tls.js'

const CHALLENGE = s256('x'.repeat(43))
const TOKEN = 'registration-token-registration-token'

/** What real MCP clients register and then send at the authorization endpoint. */
const CLIENTS: Array<{ name: string, body: Record<string, unknown>, token?: boolean, authorize: string[], refuse?: string[] }> = [
  {
    name: 'VS Code',
    body: { client_name: 'Visual Studio Code', redirect_uris: ['http://127.0.0.1:33418/', 'https://vscode.dev/redirect'], token_endpoint_auth_method: 'none' },
    token: true,
    authorize: ['http://127.0.0.1:33418/', 'http://127.0.0.1:49152/', 'https://vscode.dev/redirect'],
    refuse: ['http://localhost:33418/', 'https://vscode.dev/redirect/x', 'http://127.0.0.1:33418/other']
  },
  {
    name: 'Claude Code',
    body: { client_name: 'Claude Code', redirect_uris: ['http://localhost:53682/callback'], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'] },
    token: true,
    authorize: ['http://localhost:53682/callback', 'http://localhost:61000/callback'],
    refuse: ['http://127.0.0.1:53682/callback', 'https://localhost:53682/callback']
  },
  {
    name: 'claude.ai',
    body: { client_name: 'Claude', redirect_uris: ['https://claude.ai/api/mcp/auth_callback'], token_endpoint_auth_method: 'client_secret_post' },
    token: true,
    authorize: ['https://claude.ai/api/mcp/auth_callback'],
    refuse: ['https://claude.ai/api/mcp/auth_callback?x=1', 'https://evil.claude.ai.example.com/api/mcp/auth_callback']
  },
  {
    name: 'ChatGPT (registered)',
    body: { client_name: 'ChatGPT', redirect_uris: ['https://chatgpt.com/connector_platform_oauth_redirect'], token_endpoint_auth_method: 'client_secret_basic' },
    token: true,
    authorize: ['https://chatgpt.com/connector_platform_oauth_redirect']
  },
  {
    name: 'Cursor (no registration token, trusted scheme)',
    body: { client_name: 'Cursor', redirect_uris: ['cursor://anysphere.cursor-retrieval/oauth/user-example/callback'], token_endpoint_auth_method: 'none' },
    token: false,
    authorize: ['cursor://anysphere.cursor-retrieval/oauth/user-example/callback'],
    refuse: ['cursor://anysphere.cursor-retrieval/oauth/other/callback']
  }
]

t.test('real clients register and authorize', async t => {
  const { app } = await buildApp(t, { registration: { mode: 'token', token: TOKEN, trustedSchemes: ['cursor'] } })
  for (const c of CLIENTS) {
    const reg = await app.inject({
      method: 'POST',
      url: '/oauth/register',
      headers: c.token === true ? { authorization: `Bearer ${TOKEN}` } : {},
      payload: c.body
    })
    t.equal(reg.statusCode, 201, `${c.name}: registered`)
    const clientId = reg.json().client_id as string
    const authorize = (redirect: string) => app.inject(`/oauth/authorize?${new URLSearchParams({
      response_type: 'code', client_id: clientId, redirect_uri: redirect, code_challenge: CHALLENGE, code_challenge_method: 'S256', state: 's'
    })}`)
    for (const redirect of c.authorize) {
      const res = await authorize(redirect)
      t.equal(res.statusCode, 200, `${c.name}: ${redirect} reaches the consent page`)
    }
    for (const redirect of c.refuse ?? []) {
      const res = await authorize(redirect)
      t.equal(res.statusCode, 400, `${c.name}: ${redirect} refused`)
      t.notOk(res.headers.location, 'and never redirected to')
    }
  }
})

t.test('the redirect policy, case by case', async t => {
  const policy = { allowHttp: false, allowPrivateHosts: false, customSchemes: DEFAULT_CUSTOM_SCHEMES }
  const cases: Array<[string, boolean]> = [
    ['https://app.example.com/cb', true],
    ['http://127.0.0.1:8080/cb', true],
    ['http://[::1]:8080/cb', true],
    ['http://localhost/cb', true],
    ['http://app.example.com/cb', false],
    ['cursor://x/cb', true],
    ['com.example.app:/oauth', true],
    ['myapp://cb', false],
    ['javascript:alert(1)', false],
    ['JAVASCRIPT:alert(1)', false],
    ['data:text/html,x', false],
    ['file:///etc/passwd', false],
    ['vbscript:x', false],
    ['about:blank', false],
    ['blob:https://a.example.com/uuid', false],
    ['https://a.example.com/cb#frag', false],
    ['https://user@a.example.com/cb', false],
    ['https://10.0.0.1/cb', false],
    ['https://172.16.5.4/cb', false],
    ['https://169.254.169.254/latest', false],
    ['https://[fd00::1]/cb', false],
    ['https://[::ffff:127.0.0.1]/cb', false],
    ['https://100.64.0.1/cb', false],
    ['https://printer.local/cb', false],
    ['not a url', false],
    ['https://' + 'a'.repeat(2000) + '.example.com/', false]
  ]
  for (const [uri, ok] of cases) t.equal(checkRedirectUri(uri, policy).ok, ok, uri)
  t.ok(checkRedirectUri('http://dev.example.com/cb', { ...policy, allowHttp: true }).ok, 'http allowed for development')
  t.ok(checkRedirectUri('https://10.0.0.1/cb', { ...policy, allowPrivateHosts: true }).ok, 'private hosts when allowed')
  t.notOk(checkRedirectUri('cursor://x/cb', { ...policy, customSchemes: [] }).ok, 'custom schemes only by allow-list')
  t.ok(matchRedirectUri(['http://[::1]/cb'], 'http://[::1]:4000/cb'), 'IPv6 loopback, any port')
  t.notOk(matchRedirectUri(['https://a.example.com/cb'], 'https://a.example.com:8443/cb'), 'https needs an exact match')
})

t.test('a client ID metadata document client (ChatGPT-style) goes through authorize', async t => {
  const { cert, key } = selfSignedCert(t, ['client.test'])
  let id = ''
  let fetches = 0
  const server = createServer({ key, cert }, (_req, res) => {
    fetches++
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=300' })
    res.end(JSON.stringify({ client_id: id, client_name: 'ChatGPT', redirect_uris: ['https://chatgpt.com/connector_platform_oauth_redirect'] }))
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  id = `https://client.test:${(server.address() as AddressInfo).port}/oauth/client.json`

  const registered: unknown[] = []
  const { app } = await buildApp(t, {
    clientIdMetadataDocuments: { allowPrivateAddresses: true },
    cimdTestHooks: { lookup: async () => [{ address: '127.0.0.1', family: 4 }], ca: cert },
    auditSink: (event, fields) => { if (event === 'client_registered') registered.push(fields) }
  })
  const meta = (await app.inject('/.well-known/oauth-authorization-server')).json()
  t.equal(meta.client_id_metadata_document_supported, true)
  const authorize = (redirect: string) => app.inject(`/oauth/authorize?${new URLSearchParams({
    response_type: 'code', client_id: id, redirect_uri: redirect, code_challenge: CHALLENGE, code_challenge_method: 'S256'
  })}`)
  const ok = await authorize('https://chatgpt.com/connector_platform_oauth_redirect')
  t.equal(ok.statusCode, 200)
  t.match(ok.body, 'ChatGPT')
  t.match(ok.body, /published by <strong>client\.test:\d+<\/strong>, verified/, 'the document host is shown as verified')
  const bad = await authorize('https://evil.example.com/cb')
  t.equal(bad.statusCode, 400, 'a redirect not in the document is refused')
  t.equal(fetches, 1, 'the document was cached')
  t.same(registered, [{ clientId: id, source: 'cimd' }], 'audited (and counted) as a cimd registration, once per fetch')
  const missing = await app.inject(`/oauth/authorize?${new URLSearchParams({
    response_type: 'code', client_id: 'https://client.test:1/nothing.json', redirect_uri: 'https://x.example.com/cb', code_challenge: CHALLENGE, code_challenge_method: 'S256'
  })}`)
  t.equal(missing.statusCode, 400, 'an unreachable document is a page error, not a redirect')
  t.notOk(missing.headers.location)
})
