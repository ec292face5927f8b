// Dense float64 linear algebra for GPTQ (row-major n x n matrices): the upper Cholesky factor of an inverse.
import { TpserveError } from "../../common/errors.js";

export class NotPositiveDefiniteError extends TpserveError {
  constructor(message: string) {
    super("QUANT_NOT_PD", message);
  }
}

/** In place: lower Cholesky factor L of A (A = L L^T); the upper triangle is left as is. */
export function choleskyLower(a: Float64Array, n: number): void {
  for (let j = 0; j < n; j++) {
    const rj = j * n;
    let s = a[rj + j]!;
    for (let k = 0; k < j; k++) s -= a[rj + k]! * a[rj + k]!;
    if (!(s > 0)) throw new NotPositiveDefiniteError(`matrix is not positive definite (pivot ${j} is ${s})`);
    const d = Math.sqrt(s);
    a[rj + j] = d;
    for (let i = j + 1; i < n; i++) {
      const ri = i * n;
      let t = a[ri + j]!;
      for (let k = 0; k < j; k++) t -= a[ri + k]! * a[rj + k]!;
      a[ri + j] = t / d;
    }
  }
}

/**
 * Upper triangular U with H^-1 = U^T U (what GPTQ walks column by column). With J the exchange matrix:
 * J H J = L L^T gives H = R R^T where R = J L J is upper triangular, so H^-1 = R^-T R^-1 and U = R^-1.
 */
export function upperCholeskyOfInverse(h: Float64Array, n: number): Float64Array {
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) a[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)]!;
  choleskyLower(a, n);
  // R[i][j] = L[n-1-i][n-1-j] for j >= i.
  const r = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = i; j < n; j++) r[i * n + j] = a[(n - 1 - i) * n + (n - 1 - j)]!;
  // U = R^-1 (upper), column by column with back substitution.
  const u = new Float64Array(n * n);
  const col = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    col.fill(0, 0, j + 1);
    col[j] = 1 / r[j * n + j]!;
    for (let i = j - 1; i >= 0; i--) {
      const ri = i * n;
      let s = 0;
      for (let k = i + 1; k <= j; k++) s += r[ri + k]! * col[k]!;
      col[i] = -s / r[ri + i]!;
    }
    for (let i = 0; i <= j; i++) u[i * n + j] = col[i]!;
  }
  return u;
}
