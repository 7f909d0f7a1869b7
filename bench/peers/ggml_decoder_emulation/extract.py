import struct, json, sys
def read(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8+n]); base = 8+n
    return {k: b[base+v['data_offsets'][0]: base+v['data_offsets'][1]] for k, v in h.items() if k != '__metadata__'}, h
t = sys.argv[1]
p, h = read('packed_%s.safetensors' % t); d, _ = read('deq_%s.safetensors' % t)
print(sorted(p.keys()))
open('blocks_%s.bin' % t, 'wb').write(p[[k for k in p if 'blocks' in k][0]])
open('deq_%s.bin' % t, 'wb').write(d['w'])
