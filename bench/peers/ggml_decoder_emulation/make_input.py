import struct, json, random, math
random.seed(7)
rows, cols = 4, 512
vals = [random.gauss(0, 1) * (3 if (i % 97) == 0 else 1) for i in range(rows*cols)]
data = struct.pack('<%df' % len(vals), *vals)
hdr = json.dumps({"w": {"dtype": "F32", "shape": [rows, cols], "data_offsets": [0, len(data)]}}).encode()
hdr += b' ' * ((8 - len(hdr) % 8) % 8)
open('in.safetensors', 'wb').write(struct.pack('<Q', len(hdr)) + hdr + data)
