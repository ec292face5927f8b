set -x
export OUT
tar xJf .device/bin.tar.xz -C .device
B=.device/bin
N="ncu --clock-control none --set full --import-source yes"
$N -k regex:stream_gemv -c 1 -o $OUT/sg $B/check_stream --shape 22016x4096 --only "unpack+mma, P 2, 8 warps, block a tile, 4/SM" > $OUT/ncu-sg.log 2>&1
$N -k regex:stream_gemv -c 1 -o $OUT/lo $B/check_stream --shape 22016x4096 --only "loads only, P 2, 8 warps, block a tile, 4/SM" > $OUT/ncu-lo.log 2>&1
$N -k regex:int4t_gemv -c 1 -o $OUT/eng $B/check_int4t --bench 22016,4096,1 > $OUT/ncu-eng.log 2>&1
for r in sg lo eng; do
  ncu -i $OUT/$r.ncu-rep --page details > $OUT/$r-details.txt 2>&1
  ncu -i $OUT/$r.ncu-rep --page source --csv --print-source sass > $OUT/$r-source.csv 2>&1
done
rm -f $OUT/*.ncu-rep
ls -la $OUT; tail -5 $OUT/ncu-sg.log; grep -i -E "Duration|Issue Slots|Eligible|Active Warps|No Eligible|Memory Throughput|DRAM Throughput" $OUT/*-details.txt
