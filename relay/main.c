#include <stdio.h>
int main(void);
int
main(void)
{
    puts("mx2d " MX2_VERSION);
    return 0;
}
