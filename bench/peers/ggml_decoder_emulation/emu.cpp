// The gguf CUDA decoder as host C++ (see run.sh): every weight of a 4x512 matrix through decode8_rc
// and some through at(), compared bit for bit with the plugin's CPU dequantization.
#include <cstdio>
#include <cstring>
#include <vector>
#include <cstdlib>
#define __device__
#define __forceinline__ inline
#define __constant__
typedef unsigned short llq_bf16;
struct LlqArgs { const unsigned char *b0,*b1,*b2,*b3; long long rows, cols; long long p0,p1,p2,p3; };
static inline unsigned char __ldg(const unsigned char* p) { return *p; }
static inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
static inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
static inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
static inline float llq_f16_to_f32(unsigned short h) { _Float16 f; memcpy(&f, &h, 2); return (float)f; }
#include "../../../plugins/gguf/src/ggml.cu"
int main(int argc, char** argv) {
  int t = atoi(argv[1]); const char* bf = argv[2]; const char* df = argv[3];
  FILE* f = fopen(bf, "rb"); std::vector<unsigned char> b(1 << 22); size_t nb = fread(b.data(), 1, b.size(), f); fclose(f);
  f = fopen(df, "rb"); std::vector<float> d(4 * 512); fread(d.data(), 4, d.size(), f); fclose(f);
  LlqArgs a{b.data(), 0, 0, 0, 4, 512, t, 0, 0, 0};
  int bad = 0;
  for (unsigned r = 0; r < 4; ++r) for (unsigned c = 0; c < 512; c += 8) {
    float w[8]; LlqGgml::decode8_rc(a, nullptr, r, c, LlqGgml::Raw{0}, w);
    for (int k = 0; k < 8; ++k) { float e = d[r * 512 + c + k]; if (memcmp(&e, &w[k], 4)) { if (bad < 3) printf("t%d [%u,%u] got %g want %g\n", t, r, c + k, w[k], e); ++bad; } }
    float x = LlqGgml::at(a, nullptr, (long long)r * 512 + c + 3, r); float e = d[r * 512 + c + 3]; if (memcmp(&e, &x, 4)) ++bad;
  }
  printf("type %d: %d mismatches of %d (%zu block bytes)\n", t, bad, 4 * 512 + 4 * 64, nb);
  return bad ? 1 : 0;
}
