/* test_sanitizer_on.c: fails unless AddressSanitizer is really compiled in
 * (cmetrics' CI once listed sanitizer presets that never reached the build).
 * Built only in the sanitizer configuration. */
#include <stdio.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MD_HAVE_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define MD_HAVE_ASAN 1
#endif

int
main(void)
{
#ifdef MD_HAVE_ASAN
    puts("1 passed, 0 failed: AddressSanitizer is compiled in");
    return 0;
#else
    puts("0 passed, 1 failed: this sanitizer build has no AddressSanitizer");
    return 1;
#endif
}
