/*
 * test_image_fixture_lib - a shared library that test_image_build's fixture
 * program needs and that the dynamic loader cannot find by itself (it is
 * not in a system directory and the program has no RPATH).
 */
int test_image_fixture_value(void);

int test_image_fixture_value(void)
{
    return 42;
}
