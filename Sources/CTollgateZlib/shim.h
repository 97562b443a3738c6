#include <zlib.h>

/// deflateInit2 and inflateInit2 are macros (they pass the library's version and struct size).
static inline int tollgate_deflate_init(z_streamp stream, int level, int windowBits, int memLevel) {
    return deflateInit2(stream, level, Z_DEFLATED, windowBits, memLevel, Z_DEFAULT_STRATEGY);
}

static inline int tollgate_inflate_init(z_streamp stream, int windowBits) {
    return inflateInit2(stream, windowBits);
}
