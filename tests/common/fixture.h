/* fixture.h: reads an ExtProc fixture scrape for the unit tests
 * (tests/fixtures/extproc, a copy of ../shared/extproc; MD_FIXTURES points
 * elsewhere).  Header-only; include after cmocka.h.  The buffer is
 * malloc'd, NUL-terminated past *len, and the caller frees it. */
#ifndef MD_TEST_FIXTURE_H
#define MD_TEST_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>

static char *
md_test_read_fixture(const char *name, size_t *len)
{
    const char *dir = getenv("MD_FIXTURES");
    char path[1024];
    FILE *f;
    char *buf;
    long n;

    (void)snprintf(path, sizeof(path), "%s/extproc/%s", dir ? dir : "tests/fixtures", name);
    f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open fixture %s", path);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    assert_true(n > 0);
    rewind(f);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

#endif
