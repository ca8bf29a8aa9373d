#include "textflag.h"

// SHA-512 compression of four independent messages, one per 64-bit lane of
// the YMM registers (AVX2), for CPUs without AVX-512. The state and the
// message schedule are laid out as sha512x8's ([word][lane], 64 bytes a
// row); this code reads and writes four lanes of each row, those its
// pointers start at. AVX2 has no 64-bit rotate or three-input logic: a
// rotate is two shifts, and the state of the previous block (added back
// at its end) is kept in the h rows, the registers being too few.

// XOR of x's rotations right by r1, r2, r3, into Y8 (uses Y9, Y10):
// the right shifts accumulate in Y8, the left ones in Y10.
#define SIGMA(x, r1, l1, r2, l2, r3, l3) \
	VPSRLQ $r1, x, Y8; \
	VPSLLQ $l1, x, Y10; \
	VPSRLQ $r2, x, Y9; \
	VPXOR Y9, Y8, Y8; \
	VPSLLQ $l2, x, Y9; \
	VPXOR Y9, Y10, Y10; \
	VPSRLQ $r3, x, Y9; \
	VPXOR Y9, Y8, Y8; \
	VPSLLQ $l3, x, Y9; \
	VPXOR Y9, Y10, Y10; \
	VPXOR Y10, Y8, Y8

// ROUND(a, b, c, d, e, f, g, h): one SHA-512 round on four lanes; leaves
// the new a in h and d+T1 in d (the callers rotate the names). BX points
// at W[t] for the lanes, R8 at K[t].
#define ROUND(a, b, c, d, e, f, g, h) \
	SIGMA(e, 14, 50, 18, 46, 41, 23); \
	VPADDQ Y8, h, h; \
	VPXOR g, f, Y9; \
	VPAND e, Y9, Y9; \
	VPXOR g, Y9, Y9; \
	VPADDQ Y9, h, h; \
	VPBROADCASTQ (R8), Y9; \
	VPADDQ (BX), Y9, Y9; \
	VPADDQ Y9, h, h; \
	VPADDQ h, d, d; \
	SIGMA(a, 28, 36, 34, 30, 39, 25); \
	VPADDQ Y8, h, h; \
	VPOR b, a, Y9; \
	VPAND c, Y9, Y9; \
	VPAND b, a, Y10; \
	VPOR Y10, Y9, Y9; \
	VPADDQ Y9, h, h; \
	ADDQ $64, BX; \
	ADDQ $8, R8

// func sha512x4(h *uint64, ptrs *uint64, nblocks int, w *uint64)
TEXT ·sha512x4(SB), NOSPLIT, $0-32
	MOVQ h+0(FP), DI
	MOVQ ptrs+8(FP), SI
	MOVQ nblocks+16(FP), CX
	MOVQ w+24(FP), DX
	TESTQ CX, CX
	JZ done
	VMOVDQU (SI), Y15
	VMOVDQU 0(DI), Y0
	VMOVDQU 64(DI), Y1
	VMOVDQU 128(DI), Y2
	VMOVDQU 192(DI), Y3
	VMOVDQU 256(DI), Y4
	VMOVDQU 320(DI), Y5
	VMOVDQU 384(DI), Y6
	VMOVDQU 448(DI), Y7
	XORQ AX, AX

block:
	// The state before the block, added back at its end.
	VMOVDQU Y0, 0(DI)
	VMOVDQU Y1, 64(DI)
	VMOVDQU Y2, 128(DI)
	VMOVDQU Y3, 192(DI)
	VMOVDQU Y4, 256(DI)
	VMOVDQU Y5, 320(DI)
	VMOVDQU Y6, 384(DI)
	VMOVDQU Y7, 448(DI)

	// W[0..15]: gather word j of every lane's block, big-endian.
	VMOVDQU ·bswapMask(SB), Y14
	VPCMPEQQ Y13, Y13, Y13
	VPGATHERQQ Y13, 0(AX)(Y15*1), Y8
	VPSHUFB Y14, Y8, Y8
	VMOVDQU Y8, 0(DX)
	VPCMPEQQ Y13, Y13, Y13
	VPGATHERQQ Y13, 8(AX)(Y15*1), Y8
	VPSHUFB Y14, Y8, Y8
	VMOVDQU Y8, 64(DX)
	VPCMPEQQ Y13, Y13, Y13
	VPGATHERQQ Y13, 16(AX)(Y15*1), Y8
	VPSHUFB Y14, Y8, Y8
	VMOVDQU Y8, 128(DX)
	VPCMPEQQ Y13, Y13, Y13
	VPGATHERQQ Y13, 24(AX)(Y15*1), Y8
	VPSHUFB Y14, Y8, Y8
	VMOVDQU Y8, 192(DX)
	VPCMPEQQ Y13, Y13, Y13
	VPGATHERQQ Y13, 32(AX)(Y15*1), Y8
	VPSHUFB Y14, Y8, Y8
	VMOVDQU Y8, 256(DX)
	VPCMPEQQ Y13, Y13, Y13
	VPGATHERQQ Y13, 40(AX)(Y15*1), Y8
	VPSHUFB Y14, Y8, Y8
	VMOVDQU Y8, 320(DX)
	VPCMPEQQ Y13, Y13, Y13
	VPGATHERQQ Y13, 48(AX)(Y15*1), Y8
	VPSHUFB Y14, Y8, Y8
	VMOVDQU Y8, 384(DX)
	VPCMPEQQ Y13, Y13, Y13
	VPGATHERQQ Y13, 56(AX)(Y15*1), Y8
	VPSHUFB Y14, Y8, Y8
	VMOVDQU Y8, 448(DX)
	VPCMPEQQ Y13, Y13, Y13
	VPGATHERQQ Y13, 64(AX)(Y15*1), Y8
	VPSHUFB Y14, Y8, Y8
	VMOVDQU Y8, 512(DX)
	VPCMPEQQ Y13, Y13, Y13
	VPGATHERQQ Y13, 72(AX)(Y15*1), Y8
	VPSHUFB Y14, Y8, Y8
	VMOVDQU Y8, 576(DX)
	VPCMPEQQ Y13, Y13, Y13
	VPGATHERQQ Y13, 80(AX)(Y15*1), Y8
	VPSHUFB Y14, Y8, Y8
	VMOVDQU Y8, 640(DX)
	VPCMPEQQ Y13, Y13, Y13
	VPGATHERQQ Y13, 88(AX)(Y15*1), Y8
	VPSHUFB Y14, Y8, Y8
	VMOVDQU Y8, 704(DX)
	VPCMPEQQ Y13, Y13, Y13
	VPGATHERQQ Y13, 96(AX)(Y15*1), Y8
	VPSHUFB Y14, Y8, Y8
	VMOVDQU Y8, 768(DX)
	VPCMPEQQ Y13, Y13, Y13
	VPGATHERQQ Y13, 104(AX)(Y15*1), Y8
	VPSHUFB Y14, Y8, Y8
	VMOVDQU Y8, 832(DX)
	VPCMPEQQ Y13, Y13, Y13
	VPGATHERQQ Y13, 112(AX)(Y15*1), Y8
	VPSHUFB Y14, Y8, Y8
	VMOVDQU Y8, 896(DX)
	VPCMPEQQ Y13, Y13, Y13
	VPGATHERQQ Y13, 120(AX)(Y15*1), Y8
	VPSHUFB Y14, Y8, Y8
	VMOVDQU Y8, 960(DX)

	// W[16..79]
	LEAQ 1024(DX), BX
	MOVQ $64, R9

schedule:
	// σ0(W[t-15]) = W>>>1 ^ W>>>8 ^ W>>7
	VMOVDQU -960(BX), Y8
	VPSRLQ $1, Y8, Y9
	VPSLLQ $63, Y8, Y10
	VPXOR Y10, Y9, Y9
	VPSRLQ $8, Y8, Y10
	VPXOR Y10, Y9, Y9
	VPSLLQ $56, Y8, Y10
	VPXOR Y10, Y9, Y9
	VPSRLQ $7, Y8, Y10
	VPXOR Y10, Y9, Y9
	// σ1(W[t-2]) = W>>>19 ^ W>>>61 ^ W>>6
	VMOVDQU -128(BX), Y8
	VPSRLQ $19, Y8, Y11
	VPSLLQ $45, Y8, Y12
	VPXOR Y12, Y11, Y11
	VPSRLQ $61, Y8, Y12
	VPXOR Y12, Y11, Y11
	VPSLLQ $3, Y8, Y12
	VPXOR Y12, Y11, Y11
	VPSRLQ $6, Y8, Y12
	VPXOR Y12, Y11, Y11
	VPADDQ Y9, Y11, Y11
	VPADDQ -448(BX), Y11, Y11
	VPADDQ -1024(BX), Y11, Y11
	VMOVDQU Y11, (BX)
	ADDQ $64, BX
	DECQ R9
	JNZ schedule

	MOVQ DX, BX
	LEAQ ·sha512K(SB), R8
	MOVQ $10, R9

rounds:
	ROUND(Y0, Y1, Y2, Y3, Y4, Y5, Y6, Y7)
	ROUND(Y7, Y0, Y1, Y2, Y3, Y4, Y5, Y6)
	ROUND(Y6, Y7, Y0, Y1, Y2, Y3, Y4, Y5)
	ROUND(Y5, Y6, Y7, Y0, Y1, Y2, Y3, Y4)
	ROUND(Y4, Y5, Y6, Y7, Y0, Y1, Y2, Y3)
	ROUND(Y3, Y4, Y5, Y6, Y7, Y0, Y1, Y2)
	ROUND(Y2, Y3, Y4, Y5, Y6, Y7, Y0, Y1)
	ROUND(Y1, Y2, Y3, Y4, Y5, Y6, Y7, Y0)
	DECQ R9
	JNZ rounds

	VPADDQ 0(DI), Y0, Y0
	VPADDQ 64(DI), Y1, Y1
	VPADDQ 128(DI), Y2, Y2
	VPADDQ 192(DI), Y3, Y3
	VPADDQ 256(DI), Y4, Y4
	VPADDQ 320(DI), Y5, Y5
	VPADDQ 384(DI), Y6, Y6
	VPADDQ 448(DI), Y7, Y7
	// Every lane's next block.
	MOVQ $128, R10
	VMOVQ R10, X13
	VPBROADCASTQ X13, Y13
	VPADDQ Y13, Y15, Y15
	DECQ CX
	JNZ block

	VMOVDQU Y0, 0(DI)
	VMOVDQU Y1, 64(DI)
	VMOVDQU Y2, 128(DI)
	VMOVDQU Y3, 192(DI)
	VMOVDQU Y4, 256(DI)
	VMOVDQU Y5, 320(DI)
	VMOVDQU Y6, 384(DI)
	VMOVDQU Y7, 448(DI)
	VZEROUPPER

done:
	RET
