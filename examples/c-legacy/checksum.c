/*
 * checksum - print the CRC-32 and the length of every line of its input.
 *
 *   $ printf 'hello\nworld\n' | checksum
 *   3610a686 5
 *   3a771143 5
 *
 * A small, old-fashioned line-oriented tool: it knows nothing of networks,
 * threads or oscloud, and it stays that way (see checksum_server.c).
 */
#include <stdio.h>
#include <string.h>

static unsigned long crc_table[256];
static int crc_table_ready = 0;

static void make_crc_table(void)
{
    unsigned long c;
    int n, k;

    for (n = 0; n < 256; n++) {
        c = (unsigned long) n;
        for (k = 0; k < 8; k++) {
            if (c & 1)
                c = 0xedb88320UL ^ (c >> 1);
            else
                c = c >> 1;
        }
        crc_table[n] = c;
    }
    crc_table_ready = 1;
}

/* The CRC-32 (as in zlib and PNG) of buf[0..len). */
unsigned long checksum(const char *buf, size_t len)
{
    unsigned long c = 0xffffffffUL;
    size_t n;

    if (!crc_table_ready)
        make_crc_table();
    for (n = 0; n < len; n++)
        c = crc_table[(c ^ (unsigned char) buf[n]) & 0xff] ^ (c >> 8);
    return (c ^ 0xffffffffUL) & 0xffffffffUL;
}

int main(void)
{
    char line[4096];
    size_t len;

    while (fgets(line, sizeof line, stdin) != NULL) {
        len = strlen(line);
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = '\0';
        printf("%08lx %lu\n", checksum(line, len), (unsigned long) len);
    }
    return 0;
}
