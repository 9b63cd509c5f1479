/** A clock the test moves by hand; pass `clock.now` as the plugin's `now`. */
export class TestClock {
  t: number
  constructor (start = Date.UTC(2026, 0, 1)) {
    this.t = start
  }

  now = (): number => this.t

  advance (ms: number): void {
    this.t += ms
  }
}
