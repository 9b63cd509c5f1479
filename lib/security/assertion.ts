import { compactVerify, errors as joseErrors, type JWTVerifyGetKey } from 'jose'
import { OAuthError } from '../errors.js'
import {
  ASSERTION_ALGORITHMS, AssertionRefused, checkAssertion, decodeAssertion,
  type AssertionExpectations, type DecodedAssertion
} from '../oauth/jwt.js'
import { hashToken } from '../oauth/tokens.js'
import type { FlowStore } from '../storage/contract.js'

/**
 * The one verifier of signed JWT assertions: client assertions (private_key_jwt, RFC 7523 §2.2) and
 * ID-JAGs (the jwt-bearer grant, RFC 7523 §2.1). In order, cheapest first: the key-less checks of
 * lib/oauth/jwt.ts, the signature with jose against the key source the caller chose (an algorithm
 * allow-list, asymmetric only), then the one use of its `jti` in the store, shared by every replica.
 * The `jti` is spent only by an assertion that passed everything else, so nobody can burn another's.
 *
 * Every refusal is an OAuthError with the caller's code (`invalid_client` for a client assertion,
 * `invalid_grant` for a grant) and a description that names the assertion and the reason. An
 * assertion never appears in an error or a log.
 */

export interface AssertionVerifierOptions {
  store: Pick<FlowStore, 'consumeAssertionId'>
  now: () => number
  /** Clock difference tolerated on `exp`, `iat` and `nbf`. Default 60 s. */
  skewSeconds?: number
  /** Longest accepted lifetime of an assertion. Default 3600 s. */
  maxLifetimeSeconds?: number
}

export interface AssertionRules extends Pick<AssertionExpectations, 'issuer' | 'subject' | 'audience' | 'typ'> {
  /** What is verified, for descriptions: "client assertion", "ID-JAG". */
  label: string
  /** The error code of a refusal. */
  error: 'invalid_client' | 'invalid_grant'
  /** The key source: a static set or a remote one, as jose takes it. */
  keys: JWTVerifyGetKey
  /**
   * The caller's own checks of the verified assertion (its claims against the request), run after the
   * signature and before the `jti` is spent, so a refused assertion stays usable by its rightful
   * presenter. Throws OAuthError.
   */
  accept?: (decoded: DecodedAssertion) => void
}

/** jose's options, made once (it builds its allow-list from them on every call). */
const VERIFY_OPTIONS = Object.freeze({ algorithms: [...ASSERTION_ALGORITHMS] })

export class AssertionVerifier {
  readonly #store: Pick<FlowStore, 'consumeAssertionId'>
  readonly #now: () => number
  readonly #skew: number
  readonly #maxLifetime: number
  /** The value each decoded assertion handed out by `decode` came from. */
  readonly #decodedFrom = new WeakMap<DecodedAssertion, string>()

  constructor (opts: AssertionVerifierOptions) {
    this.#store = opts.store
    this.#now = opts.now
    this.#skew = opts.skewSeconds ?? 60
    this.#maxLifetime = opts.maxLifetimeSeconds ?? 3600
  }

  /**
   * Decode without verifying, for a caller that must read the unverified `iss` to choose the key
   * source (several trusted issuers). Refuses what `verify` would refuse on shape alone.
   */
  decode (value: string, rules: Pick<AssertionRules, 'label' | 'error'>): DecodedAssertion {
    let decoded: DecodedAssertion
    try {
      decoded = decodeAssertion(value)
    } catch (err) {
      throw this.#refusal(err, rules)
    }
    this.#decodedFrom.set(decoded, value)
    return decoded
  }

  /**
   * Verify `value` against the rules. `decoded`: what `decode` gave for this very value, when the
   * caller has it, so that it is not decoded twice (anything else is ignored and the value decoded).
   */
  async verify (value: string, rules: AssertionRules, decoded?: DecodedAssertion): Promise<DecodedAssertion> {
    const now = this.#now()
    try {
      if (decoded === undefined || this.#decodedFrom.get(decoded) !== value) decoded = decodeAssertion(value)
      checkAssertion(decoded, {
        issuer: rules.issuer,
        subject: rules.subject,
        audience: rules.audience,
        typ: rules.typ,
        now,
        skewSeconds: this.#skew,
        maxLifetimeSeconds: this.#maxLifetime
      })
      await compactVerify(value, rules.keys, VERIFY_OPTIONS)
    } catch (err) {
      throw this.#refusal(err, rules)
    }
    rules.accept?.(decoded)
    const { iss, jti, exp } = decoded.claims
    const first = await this.#store.consumeAssertionId(hashToken(`${iss}\u0000${jti}`), (exp + this.#skew) * 1000, now)
    if (!first) throw new OAuthError(rules.error, `The ${rules.label} was refused: its "jti" was used before (an assertion is good for one request)`)
    return decoded
  }

  /** The OAuth error for what went wrong; an error that is not about the assertion goes on unchanged. */
  #refusal (err: unknown, rules: Pick<AssertionRules, 'label' | 'error'>): unknown {
    const reason = reasonOf(err)
    if (reason === undefined) return err
    return new OAuthError(rules.error, `The ${rules.label} was refused: ${reason}`)
  }
}

function reasonOf (err: unknown): string | undefined {
  if (err instanceof AssertionRefused) return err.message
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'its signature does not verify'
  if (err instanceof joseErrors.JWKSNoMatchingKey) return 'no key of the signer\'s key set matches its header (kid, alg)'
  if (err instanceof joseErrors.JWKSMultipleMatchingKeys) return 'several keys of the signer\'s key set match; the header must name one ("kid")'
  if (err instanceof joseErrors.JOSEError) return 'it could not be verified with the signer\'s keys'
  // The key set could not be fetched: the fetcher's reason names no secret.
  if ((err as { code?: unknown })?.code === 'FST_MCP_OAUTH_FETCH_FAILED') return `the signer's key set could not be fetched: ${(err as Error).message}`
  return undefined
}
