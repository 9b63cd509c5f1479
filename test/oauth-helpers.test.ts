import { test } from 'tap'
import { isValidChallenge, isValidVerifier, s256, verifyPkce } from '../lib/oauth/pkce.js'
import {
  assertClientHolds, clientMayHold, decideClientScopes, decideScopes, narrowScopes, registeredScope, withinClient
} from '../lib/oauth/scopes.js'
import { matchResource } from '../lib/oauth/resource.js'
import { hasUnsafeDisplayChars } from '../lib/oauth/display.js'
import { generateId, generateToken, hashToken, looksLike, safeEqual, TOKEN_PREFIX } from '../lib/oauth/tokens.js'
import { checkRedirectUri, isLoopbackRedirect, matchRedirectUri } from '../lib/oauth/redirect.js'
import { OAuthError } from '../lib/errors.js'

// The pure helpers of lib/oauth/, each rule on its own: no server, no store, no clock.

const VERIFIER = 'dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk'

test('PKCE: RFC 7636 appendix B, S256 and plain, and malformed verifiers and challenges', async (t) => {
  t.equal(s256(VERIFIER), 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', 'the RFC 7636 appendix B vector')
  t.ok(verifyPkce(VERIFIER, s256(VERIFIER), 'S256'))
  t.notOk(verifyPkce(VERIFIER, s256(VERIFIER + 'x'), 'S256'))
  t.ok(verifyPkce(VERIFIER, VERIFIER, 'plain'))
  t.notOk(verifyPkce(VERIFIER, s256(VERIFIER), 'plain'), 'plain compares the verifier itself')
  t.notOk(verifyPkce('short', 'short', 'plain'), 'a verifier under 43 characters never matches')
  t.notOk(verifyPkce('a'.repeat(129), 'a'.repeat(129), 'plain'), 'nor one over 128')
  t.notOk(verifyPkce(VERIFIER.slice(0, 42) + '+', s256(VERIFIER.slice(0, 42) + '+'), 'S256'), 'nor one with a character outside the set')
  t.ok(isValidVerifier('a'.repeat(43)) && isValidVerifier('~._-'.repeat(32)))
  t.notOk(isValidVerifier('a'.repeat(42)))
  t.ok(isValidChallenge(s256(VERIFIER), 'S256'))
  t.notOk(isValidChallenge(s256(VERIFIER) + 'A', 'S256'), 'an S256 challenge is exactly 43 characters')
  t.notOk(isValidChallenge(s256(VERIFIER).slice(0, 42) + '=', 'S256'))
  t.ok(isValidChallenge(VERIFIER + '~', 'plain'), 'a plain challenge follows the verifier grammar')
  t.notOk(isValidChallenge('x', 'plain'))
})

test('scopes: requests, defaults, malformed and unknown scopes', async (t) => {
  const supported = ['mcp:tools', 'mcp:admin']
  t.same(decideScopes(undefined, supported, ['mcp:tools']), { ok: true, scopes: ['mcp:tools'] })
  t.same(decideScopes('  ', supported, ['mcp:tools']), { ok: true, scopes: ['mcp:tools'] }, 'blank is absent')
  t.same(decideScopes('mcp:admin  mcp:admin mcp:tools', supported, []), { ok: true, scopes: ['mcp:admin', 'mcp:tools'] }, 'each once, order kept')
  t.same(decideScopes('offline_access', supported, ['mcp:tools']), { ok: true, scopes: ['mcp:tools'] }, 'offline_access alone gets the defaults')
  t.same(decideScopes('offline_access', supported, ['mcp:tools'], []), { ok: false, description: 'Unsupported scope: offline_access' })
  t.same(decideScopes('mcp:"x"', supported, []), { ok: false, description: 'The scope parameter is malformed' })
  t.same(decideScopes('a\\b', supported, []), { ok: false, description: 'The scope parameter is malformed' })
  // Whitespace other than the space separator: blank when that is all there is, malformed otherwise.
  t.same(decideScopes('\t', supported, ['mcp:tools']), { ok: true, scopes: ['mcp:tools'] }, 'a tab alone is blank')
  t.same(decideScopes(' \t \n', supported, ['mcp:tools']), { ok: true, scopes: ['mcp:tools'] }, 'blanks of several kinds are blank')
  t.same(decideScopes('mcp:tools\tmcp:admin', supported, []), { ok: false, description: 'The scope parameter is malformed' }, 'tab is no separator')
  t.same(decideScopes('mcp:tools \t', supported, []), { ok: false, description: 'The scope parameter is malformed' })
  t.same(decideScopes('mcp:tools', supported, ['mcp:admin']), { ok: true, scopes: ['mcp:tools'] }, 'one scope, the usual request')
  t.same(decideScopes(' mcp:tools ', supported, []), { ok: true, scopes: ['mcp:tools'] }, 'surrounding spaces are separators')
  t.same(decideScopes('mcp:nope', supported, ['mcp:tools']), { ok: false, description: 'Unsupported scope: mcp:nope' })
  t.same(decideScopes('mcp:"x" mcp:nope', supported, []), { ok: false, description: 'The scope parameter is malformed' }, 'malformed before unknown')
  const repeated = Array.from({ length: 40 }, (_, i) => i % 2 === 0 ? 'mcp:tools' : 'mcp:admin').join(' ')
  t.same(decideScopes(repeated, supported, []), { ok: true, scopes: ['mcp:tools', 'mcp:admin'] }, 'a long request: each once, order kept')
  t.same(decideScopes(`${repeated} mcp:"x"`, supported, []), { ok: false, description: 'The scope parameter is malformed' })
  t.same(decideScopes('', supported, ['mcp:tools']), { ok: true, scopes: ['mcp:tools'] }, 'empty is absent')
  const defaults = ['mcp:tools']
  const kept = decideScopes(undefined, supported, defaults)
  t.ok(kept.ok && kept.scopes !== defaults, 'the defaults are copied, never shared')
  const many = Array.from({ length: 40 }, (_, i) => `unknown:${'x'.repeat(40)}${i}`).join(' ')
  const refused = decideScopes(many, supported, [])
  t.equal(refused.ok, false)
  t.ok(!refused.ok && refused.description.length <= 200 && refused.description.startsWith('Unsupported scope: unknown:'), 'the description is bounded')
})

test('scopes: narrowing on refresh', async (t) => {
  t.same(narrowScopes(undefined, ['a', 'b']), { ok: true, scopes: ['a', 'b'] })
  t.same(narrowScopes('b', ['a', 'b']), { ok: true, scopes: ['b'] })
  t.same(narrowScopes('b b ', ['a', 'b']), { ok: true, scopes: ['b'] })
  t.same(narrowScopes('c', ['a', 'b']), { ok: false, description: 'The requested scope exceeds what was granted' })
  t.same(narrowScopes('a', []), { ok: false, description: 'None of the granted scopes is still registered for this client' })
})

test("scopes: a client's registered scope bounds what it may hold", async (t) => {
  const known = ['mcp:tools', 'mcp:admin']
  t.equal(registeredScope('openid profile', known), undefined, 'scopes of another server restrict nothing')
  t.equal(registeredScope('mcp:tools openid mcp:tools', known), 'mcp:tools')
  t.ok(clientMayHold({}, 'mcp:admin'), 'a client without a registered scope may hold any')
  t.notOk(clientMayHold({ scope: 'mcp:tools' }, 'mcp:admin'))
  t.same(withinClient(['mcp:admin', 'mcp:tools'], { scope: 'mcp:tools' }), ['mcp:tools'])
  const client = { scope: 'mcp:tools' }
  t.same(decideClientScopes(undefined, known, known, client), { ok: true, scopes: ['mcp:tools'] }, 'defaults narrowed to the client')
  t.same(decideClientScopes('mcp:admin', known, known, client), { ok: false, description: 'This client is not registered for the scope: mcp:admin' })
  t.same(decideClientScopes('bogus', known, known, client), { ok: false, description: 'Unsupported scope: bogus' })
  t.same(decideClientScopes(undefined, known, ['mcp:admin'], client), {
    ok: false, description: 'None of the default scopes is registered for this client; request one of its registered scopes'
  })
  t.doesNotThrow(() => assertClientHolds(['mcp:tools'], client))
  const err = (() => { try { assertClientHolds(['mcp:admin', 'mcp:tools'], client) } catch (e) { return e } })()
  t.ok(err instanceof OAuthError)
  t.match(err, { error: 'invalid_scope', message: 'This client is no longer registered for the scope: mcp:admin' })
})

test('resources: RFC 8707 spellings of one resource compare equal, others do not', async (t) => {
  const resources = [{ resource: 'https://mcp.example.com/mcp' }, { resource: 'https://mcp.example.com/other?x=1' }]
  const first = resources[0]
  t.equal(matchResource('https://mcp.example.com/mcp', resources), first)
  t.equal(matchResource('HTTPS://MCP.example.com:443/mcp/', resources), first, 'scheme and host case, default port, trailing slash')
  t.equal(matchResource('https://mcp.example.com/other?x=1', resources), resources[1])
  t.equal(matchResource('https://mcp.example.com/other', resources), null, 'the query is part of the resource')
  t.equal(matchResource('https://mcp.example.com/MCP', resources), null, 'the path is case-sensitive')
  t.equal(matchResource('https://mcp.example.com/mcp#frag', resources), null, 'a fragment is never a resource')
  t.equal(matchResource('https://mcp.example.com/mcp#', resources), null, 'not even an empty one')
  t.equal(matchResource('not a url', resources), null)
  t.equal(matchResource('not a url', [{ resource: 'not a url' }]), null, 'a configured value that is no URL never matches')
})

test('display: control and text-direction characters are refused, other text is not', async (t) => {
  t.notOk(hasUnsafeDisplayChars('Claude Desktop – ünïcode ✓'))
  for (const c of ['\u0000', '\n', '\u007F', '\u0085', '\u202E', '\u2066', '\u061C', '\u200F']) {
    t.ok(hasUnsafeDisplayChars(`a${c}b`), `U+${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
  }
})

test('credentials: prefixed 256-bit tokens, their shape check, hashing and constant-time comparison', async (t) => {
  for (const kind of Object.keys(TOKEN_PREFIX) as Array<keyof typeof TOKEN_PREFIX>) {
    const token = generateToken(kind)
    t.ok(token.startsWith(TOKEN_PREFIX[kind]) && token.length === TOKEN_PREFIX[kind].length + 43, kind)
    t.ok(looksLike(kind, token))
    t.notOk(looksLike(kind, token + 'A'), 'one character too many')
    t.notOk(looksLike(kind, token.slice(0, -1) + '.'), 'a character outside base64url')
  }
  t.notOk(looksLike('accessToken', generateToken('refreshToken')), 'a refresh token is no access token')
  const seen = new Set(Array.from({ length: 300 }, () => generateToken('accessToken')))
  t.equal(seen.size, 300, 'the pool hands out each byte once, across refills')
  t.match(generateId(), /^[A-Za-z0-9_-]{22}$/)
  t.equal(hashToken('abc'), 'ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0', 'SHA-256, base64url')
  t.ok(safeEqual('same', 'same'))
  t.notOk(safeEqual('same', 'sama'))
  t.notOk(safeEqual('short', 'longer one'), 'different lengths')
})

test('redirects: the scheme policy, loopback on any port, exact match otherwise', async (t) => {
  const policy = { allowHttp: false, allowPrivateHosts: false, customSchemes: ['cursor', '*.*'] }
  t.same(checkRedirectUri('https://app.example.com/cb', policy), { ok: true, kind: 'https' })
  t.same(checkRedirectUri('http://127.0.0.1:8080/cb', policy), { ok: true, kind: 'loopback' })
  t.same(checkRedirectUri('cursor://callback', policy), { ok: true, kind: 'custom' })
  t.same(checkRedirectUri('com.example.app:/cb', policy), { ok: true, kind: 'custom' })
  t.same(checkRedirectUri('http://app.example.com/cb', { ...policy, allowHttp: true }), { ok: true, kind: 'http' })
  t.same(checkRedirectUri('https://10.0.0.1/cb', { ...policy, allowPrivateHosts: true }), { ok: true, kind: 'https' })
  const refusals: Array<[string, string]> = [
    ['https://' + 'a'.repeat(2000), 'is too long'],
    ['/relative', 'is not an absolute URI'],
    ['javascript:alert(1)', 'uses the forbidden scheme "javascript:"'],
    ['https://app.example.com/cb#x', 'must not contain a fragment'],
    ['https://user:pw@app.example.com/cb', 'must not contain user information'],
    ['https://10.0.0.1/cb', 'points at a private or special-use address'],
    ['http://app.example.com/cb', 'uses http on a non-loopback host (https is required)'],
    ['vscode://callback', 'uses the scheme "vscode:", which is not allowed here']
  ]
  for (const [uri, reason] of refusals) t.same(checkRedirectUri(uri, policy), { ok: false, reason }, uri.slice(0, 40))
  t.ok(matchRedirectUri(['http://127.0.0.1/cb'], 'http://127.0.0.1:53121/cb'), 'any port on loopback')
  t.ok(matchRedirectUri(['http://[::1]:1/cb?x=1'], 'http://[::1]:2/cb?x=1'))
  t.notOk(matchRedirectUri(['http://127.0.0.1/cb'], 'http://localhost:53121/cb'), 'the same loopback host')
  t.notOk(matchRedirectUri(['http://127.0.0.1/cb'], 'http://127.0.0.1:1/other'), 'the same path')
  t.notOk(matchRedirectUri(['https://app.example.com/cb'], 'https://app.example.com:444/cb'), 'exact elsewhere')
  t.notOk(matchRedirectUri(['http://127.0.0.1/cb'], 'http://127.0.0.1:1/cb#f'))
  t.notOk(matchRedirectUri(['not a uri'], 'http://127.0.0.1:1/cb'))
  t.ok(isLoopbackRedirect('http://localhost:3/x'))
  t.notOk(isLoopbackRedirect('https://127.0.0.1/x'), 'https is not the loopback form')
  t.notOk(isLoopbackRedirect('::'))
})
