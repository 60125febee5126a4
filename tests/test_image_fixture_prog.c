/*
 * test_image_fixture_prog - a program linked against
 * test_image_fixture_lib without an RPATH: test_image_build adds it to an
 * image to check what happens when a library cannot be found.
 */
int test_image_fixture_value(void);

int main(void)
{
    return test_image_fixture_value() == 42 ? 0 : 1;
}
