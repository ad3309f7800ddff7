/** How a float16 output agrees with the float32 one: cosine, max abs error, largest |want|, IoU of the masks > threshold and their union's size. */
export function maskAgreement(want: ArrayLike<number>, got: ArrayLike<number>, threshold: number): { cosine: number; maxAbs: number; largest: number; iou: number; textPixels: number };
