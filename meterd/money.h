/* money.h: exact money in integer nano-units (1e-9 of a currency).
 *
 * Money is never floating point.  Prices and amounts are int64_t nanos,
 * parsed from and printed as decimal strings with at most 9 decimals.  A
 * bill line's amount is tokens x price-per-million / 10^6, computed with a
 * 128-bit intermediate and rounded half to even exactly once; totals are sums
 * of lines (checked with md_add_i64).  Pure functions, any thread, no I/O. */
#ifndef MD_MONEY_H
#define MD_MONEY_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define MD_MONEY_DECIMALS 9
#define MD_MONEY_SCALE    1000000000LL   /* nanos per currency unit */
#define MD_MONEY_PER      1000000LL      /* prices are per million tokens */
#define MD_MONEY_STR_MAX  40             /* longest decimal string accepted */
#define MD_MONEY_FMT_MAX  24             /* "-9223372036.854775808" + NUL */

/* Parses a non-negative decimal string: digits, optionally "." and 1 to 9
 * digits ("0.15", "12", "0.000000001", "007.5").  No sign, exponent, spaces,
 * bare "." or trailing "."; more than 9 decimals is MD_EPARSE (never rounded
 * away); more than INT64_MAX nanos is MD_ELIMIT.  *nanos untouched on error.
 * Used for prices. */
int md_money_parse(const char *s, size_t len, int64_t *nanos, struct md_err *err);
/* The same, also accepting one leading '-' ("-0.5", "-10"; "-0" is 0).
 * Used for amounts and percent adjustments.  Range INT64_MIN..INT64_MAX. */
int md_money_parse_signed(const char *s, size_t len, int64_t *nanos, struct md_err *err);

/* Shortest exact decimal: "0.15", "12", "-0.000000001", "0".  Returns MD_OK,
 * or MD_ELIMIT when buf_len < MD_MONEY_FMT_MAX would be too short (buf then
 * holds ""). */
int md_money_fmt(int64_t nanos, char *buf, size_t buf_len);
/* Exactly `decimals` decimals (0..9), rounded half to even when decimals < 9
 * ("0.12" for 0.125 at 2, "0.14" for 0.135).  For display only: bills keep
 * nanos.  A result that rounds to zero has no sign. */
int md_money_fmt_fixed(int64_t nanos, unsigned decimals, char *buf, size_t buf_len);

/* The one rounding rule of a bill line:
 *   amount = round_half_even(tokens * price_per_million_nanos / 10^6)
 * with a signed 128-bit intermediate (no overflow possible there).  A result
 * outside int64 is MD_ELIMIT with *amount_nanos untouched. */
int md_money_line_amount(uint64_t tokens, int64_t price_per_million_nanos,
    int64_t *amount_nanos, struct md_err *err);

/* Percent adjustment (markup > 0, discount < 0), percent in nano-percent
 * (1e-9 percent, as md_money_parse_signed reads "-10" or "2.5"):
 *   out = round_half_even(amount * (100 + percent) / 100)
 * computed exactly in 128 bits, rounded once.  The pricing module applies it
 * to a unit price, so a bill line still has exactly one rounding of its
 * amount and amount = tokens x shown unit price.  MD_ELIMIT if out of int64. */
int md_money_apply_percent(int64_t amount_nanos, int64_t percent_nanos, int64_t *out,
    struct md_err *err);

/* Rounds n / d (d > 0) to the nearest integer, ties to the even one.
 * Exposed for the tests and for the rating module's own sums. */
__int128 md_money_div_half_even(__int128 n, __int128 d);

/* 1 when s is shaped like an ISO 4217 code: exactly 3 letters A-Z. */
int md_money_currency_valid(const char *s);

#endif
