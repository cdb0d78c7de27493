// The host build of the engine's kernels: the CUDA sources themselves, compiled for the CPU.
// Loaded through ctypes (gpudecode/_host.py); the empty module init only makes the shared
// library a valid Python extension so that setuptools can build and ship it.
//
// The library is built once per instruction set: this file as is for the baseline of the
// architecture (runs on every CPU of it), hostkernels_avx2.cpp for x86-64 CPUs with AVX2. The
// loader asks the baseline build which ones the CPU supports and loads the best.
#include <string.h>

#include "shim.h"
#include "../mv.cu"
#include "../accumulate.cu"
#include "../gather.cu"
#include "../batch.cu"

// Host glue for the CPU backend (gpudecode/cpu.py), not a kernel: one P-frame folded into S with one
// call from Python instead of four (each ctypes call costs microseconds, and a clip has ~40
// P-frames). The kernels run in the GPU backend's order: zero the cell grid, rasterise the MVs
// into it; if a block is off that grid, zero the dense grid and rasterise into 1-pixel cells
// instead; then one accumulation step. Returns the cell shift used.
extern "C" int gd_host_p_frame(const gd_motion_vector* mvs, int num_mvs, gd_i16* grid, int grid_w, int grid_h,
                               int cell_shift, gd_i16* dense, const gd_i32* src_prev, gd_i32* src_next, int width,
                               int height) {
    memset(grid, 0, sizeof(gd_i16) * 2 * (size_t)grid_w * grid_h);
    gd_i32 misaligned = 0;
    rasterize_mv(mvs, num_mvs, grid_w, grid_h, cell_shift, grid, &misaligned);
    if (misaligned) {
        memset(dense, 0, sizeof(gd_i16) * 2 * (size_t)width * height);
        rasterize_mv(mvs, num_mvs, width, height, 0, dense, &misaligned);
        grid = dense;
        grid_w = width;
        cell_shift = 0;
    }
    accumulate_step(src_prev, src_next, grid, grid_w, cell_shift, width, height);
    return cell_shift;
}

// Host glue for the GPU path's CPU stage (gpudecode/packet.py), not a kernel: a decoded 4:2:0 frame's
// planes (rows padded to their strides) into one tightly packed I420 slot of the packet, in one call
// instead of three NumPy views and three strided copies per frame. Chroma is (width+1)/2 x (height+1)/2.
extern "C" void gd_host_pack_i420(const gd_u8* y, int y_stride, const gd_u8* u, const gd_u8* v, int uv_stride,
                                  int width, int height, gd_u8* dst) {
    for (int r = 0; r < height; ++r) memcpy(dst + (size_t)r * width, y + (size_t)r * y_stride, width);
    const int cw = (width + 1) / 2, ch = (height + 1) / 2;
    gd_u8* du = dst + (size_t)width * height;
    gd_u8* dv = du + (size_t)cw * ch;
    for (int r = 0; r < ch; ++r) {
        memcpy(du + (size_t)r * cw, u + (size_t)r * uv_stride, cw);
        memcpy(dv + (size_t)r * cw, v + (size_t)r * uv_stride, cw);
    }
}

// Host glue for the CPU stage: append one P-frame's MV records to the packet's buffer and return the
// cell shift the GPU stage may rasterise them with: cell_shift if every past-referencing block sits on
// that grid, else 0 (1-pixel cells). The rule is rasterize_mv's *misaligned test (mv.cu), so the host
// decides what the GPU would find; checked while the records are in cache (a NumPy pass over a
// clip's records afterwards costs ~1 ms of memory traffic).
extern "C" int gd_host_append_mvs(const gd_motion_vector* mvs, int num_mvs, gd_u8* dst, int cell_shift) {
    if (num_mvs <= 0) return cell_shift;
    memcpy(dst, mvs, sizeof(gd_motion_vector) * (size_t)num_mvs);
    const int cell_mask = (1 << cell_shift) - 1;
    int off_grid = 0;
    for (int i = 0; i < num_mvs; ++i) {
        const gd_motion_vector& m = mvs[i];
        if (m.source >= 0) continue;  // only references into the past are rasterised
        const int x0 = m.dst_x - m.w / 2, y0 = m.dst_y - m.h / 2;
        off_grid |= (x0 | y0 | m.w | m.h) & cell_mask;
    }
    return off_grid ? 0 : cell_shift;
}

// Host glue for the MV sidecar reader (gpudecode/sidecar.py), not a kernel: the first `frames` P-frames
// of one GOP as stored (counts[f] records per frame, 10 packed bytes each: u8 w, h, then int16 x0, y0 as
// differences from the GOP's record before, dx = dst_x - src_x, dy), expanded into FFmpeg's records as the
// decoder exports them (source -1, the fields the kernels do not read 0), with each frame's cell shift by
// gd_host_append_mvs's rule. All arithmetic wraps at 16 bits, as the writer's did. Returns records written.
// The caller has checked that `stored` holds every record asked for and `out` has room for them.
extern "C" int gd_host_expand_mvs(const gd_u8* stored, const unsigned int* counts, int frames, gd_u8* out,
                                  int* shifts, int cell_shift) {
    const int cell_mask = (1 << cell_shift) - 1;
    gd_motion_vector* dst = (gd_motion_vector*)out;
    gd_i16 x0 = 0, y0 = 0;
    int total = 0;
    for (int f = 0; f < frames; ++f) {
        int off_grid = 0;
        for (unsigned int i = 0; i < counts[f]; ++i, stored += 10) {
            gd_i16 v[4];
            memcpy(v, stored + 2, sizeof v);  // unaligned, little-endian (as every host this builds for)
            x0 = (gd_i16)(x0 + v[0]);
            y0 = (gd_i16)(y0 + v[1]);
            gd_motion_vector m;
            memset(&m, 0, sizeof m);
            m.source = -1;
            m.w = stored[0];
            m.h = stored[1];
            m.dst_x = (gd_i16)(x0 + m.w / 2);
            m.dst_y = (gd_i16)(y0 + m.h / 2);
            m.src_x = (gd_i16)(m.dst_x - v[2]);
            m.src_y = (gd_i16)(m.dst_y - v[3]);
            off_grid |= ((m.dst_x - m.w / 2) | (m.dst_y - m.h / 2) | m.w | m.h) & cell_mask;
            dst[total++] = m;
        }
        shifts[f] = off_grid ? 0 : cell_shift;
    }
    return total;
}

// Which sources this library was built from (see gpudecode/_host.py): a library built from older
// sources is never called with newer signatures.
#ifndef GD_SOURCES_DIGEST
#define GD_SOURCES_DIGEST "unknown"
#endif
extern "C" const char* gd_sources_digest(void) { return GD_SOURCES_DIGEST; }

// The instruction set this library was compiled for.
#ifndef GD_HOST_ISA
#define GD_HOST_ISA "baseline"
#endif
extern "C" const char* gd_host_isa(void) { return GD_HOST_ISA; }

// Whether this CPU (and its OS, which must save the wide registers) runs the AVX2 build. Only ever
// called in the baseline build, which is safe to load anywhere.
extern "C" int gd_cpu_has_avx2(void) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi") &&
           __builtin_cpu_supports("bmi2");
#else
    return 0;
#endif
}

#ifdef GD_PYTHON_MODULE  // the module's name: _hostkernels, _hostkernels_avx2
#include <Python.h>
#define GD_CAT_(a, b) a##b
#define GD_CAT(a, b) GD_CAT_(a, b)
#define GD_STR_(a) #a
#define GD_STR(a) GD_STR_(a)
static struct PyModuleDef gd_module = {PyModuleDef_HEAD_INIT, GD_STR(GD_PYTHON_MODULE),
                                       "Host build of the gpudecode kernels (use via ctypes).", -1};
extern "C" PyMODINIT_FUNC GD_CAT(PyInit_, GD_PYTHON_MODULE)(void) { return PyModule_Create(&gd_module); }
#endif
