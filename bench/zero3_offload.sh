#!/usr/bin/env bash
# ZeRO-3 on one GPU with the parameters offloaded (issue 9), from the repository root on the lent
# machine with the staged build in .gpu/ (logs in $OUT or ./gpu-out):
#   equal   GPT-2 124M, 10 steps, B 8 x T 1024, no shuffling, the optimizer offloaded to pinned
#           host memory in every run: stage 2 (no partitioning at 1 GPU, the reference) vs
#           stage 3 with offload_param cpu and nvme, and with 2-step accumulation (B 4)
#           against the reference with the same accumulation. Prints loss and grad norm per
#           step side by side.
#   budget  GPT-2 1.5B (3.1 GB of bf16 parameters) under --gpu_mem 2G: stage 3 with
#           offload_param nvme trains; the same budget without parameter offload is refused
#           naming the budget; tokens/s next to the unlimited stage-2 run of the same model.
#   sanity  gpt2-tiny under compute-sanitizer memcheck, racecheck, synccheck with offload_param cpu
#           and nvme.
#   sanity2 memcheck at GPUS GPUs (NCCL), every process, gpt2-tiny stage 3 with offload_param cpu
#           and stage 2 with 20000-element gradient buckets; API errors not reported (NCCL
#           probes kernels it has no image for and handles the error).
#   ckpt    save at step 3 of 6 and resume from it: one GPU with offload_param nvme, and GPUS
#           GPUs at stage 3 with offload_param cpu; steps 4-6 of the resumed run next to the
#           uninterrupted one; then zinf ckpt consolidate and zinf eval of the consolidated
#           weights against the last step's loss.
#   ranks   GPUS (default 2) GPUs, NCCL: stage 3 with offload_param none / cpu / nvme, micro-batch
#           8/GPUS per rank, against one GPU at B 8 (the equal mode's reference); rank 0's
#           loss (its own rows) and the global grad norm per step, and each rank's memory line.
#   bufs    the budget mode's offload_param nvme run at each buffer_count in BCS (default "5 16").
# MODES (default "sanity equal budget") picks; QD (default 32) is aio.queue_depth (fio runs at 32).
set -u
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$PWD/.gpu/lib NCCL_NVLS_ENABLE=0
Z=$PWD/.gpu/bin/zinf
out=${OUT:-$PWD/gpu-out}; mkdir -p "$out"
w=${ZINF_WORK_DIR:-/var/tmp/zinf-z3}; mkdir -p $w/nvme
$Z data corpus --out $w/c.txt >/dev/null; $Z data encode --text $w/c.txt --out $w/c.bin >/dev/null

cfg() { # cfg FILE STAGE ACCUM PARAM_DEVICE SUB_GROUP
	local op=""
	[ "$4" != none ] && op=", \"offload_param\": {\"device\": \"$4\", \"nvme_path\": \"$w/nvme\", \"buffer_count\": 5, \"buffer_size\": 100000000, \"max_in_cpu\": 0}"
	cat > "$1" <<JSON
{"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": $3, "gradient_clipping": 1.0,
 "steps_per_print": 1, "wall_clock_breakdown": true, "bf16": {"enabled": true},
 "optimizer": {"type": "AdamW", "params": {"lr": 3e-4, "weight_decay": 0.1}},
 "zero_optimization": {"stage": $2, "sub_group_size": $5,
   "offload_optimizer": {"device": "cpu", "pin_memory": true}$op},
 "aio": {"block_size": 1048576, "queue_depth": ${QD:-32}, "thread_count": 1}}
JSON
}
# budget_run NAME BUFFER_COUNT MAX_IN_CPU: GPT-2 1.5B (args in $common) under --gpu_mem 2G,
# stage 3 + offload_param nvme; prints its time, store and memory lines
budget_run() {
	cfg $w/$1.json 3 1 nvme 10000000
	sed -i -e "s/\"buffer_count\": 5/\"buffer_count\": $2/" -e "s/\"max_in_cpu\": 0/\"max_in_cpu\": $3/" $w/$1.json
	echo "== --gpu_mem 2G, stage 3 + offload_param nvme, buffer_count $2, max_in_cpu $3"
	timeout 400 $Z train --config $w/$1.json $common --gpu_mem 2G > $out/$1.log 2>&1 || { echo failed; tail -8 $out/$1.log; }
	grep -E "^step|time:|parameter store:|done:|memory:" $out/$1.log | tail -5
}
losses() { grep -oE "^step +[0-9]+/[0-9]+ \| loss [0-9.]+ \| lr [0-9.e+-]+ \| grad norm [0-9.]+" "$1" | awk '{print $2, $5, $12}'; }

for mode in ${MODES:-sanity equal budget}; do
case $mode in
sanity)
	for d in cpu nvme; do
		cfg $w/t$d.json 3 2 $d 4096
		for tool in memcheck racecheck synccheck; do
			echo "== compute-sanitizer $tool: gpt2-tiny stage 3, offload_param $d, accumulation 2"
			compute-sanitizer --tool $tool --error-exitcode 99 $Z train --config $w/t$d.json \
				--model gpt2-tiny --data $w/c.bin --steps 3 --seq_len 64 --per_device_train_batch_size 4 \
				--device gpu > $out/sanitize_${tool}_$d.log 2>&1; echo "rc $?"
			grep -E "ERROR SUMMARY|done:" $out/sanitize_${tool}_$d.log
		done
	done
	;;
sanity2)
	cfg $w/t2.json 3 2 cpu 4096
	cfg $w/t2b.json 2 2 none 4096
	sed -i 's/"sub_group_size": 4096,/"sub_group_size": 4096, "reduce_bucket_size": 20000,/' $w/t2b.json
	for t in "t2 stage 3, offload_param cpu" "t2b stage 2, reduce_bucket_size 20000"; do
		set -- $t; f=$1; shift
		echo "== compute-sanitizer memcheck (all processes): gpt2-tiny $* on ${GPUS:-2} GPUs, accumulation 2"
		timeout 300 compute-sanitizer --target-processes all --tool memcheck --report-api-errors no --error-exitcode 99 $Z train --num_gpus ${GPUS:-2} \
			--config $w/$f.json --model gpt2-tiny --data $w/c.bin --steps 3 --seq_len 64 --per_device_train_batch_size 4 \
			--device gpu > $out/sanitize2_$f.log 2>&1; echo "rc $?"
		grep -E "ERROR SUMMARY|done:" $out/sanitize2_$f.log
	done
	;;
equal)
	common="--model gpt2-124m --data $w/c.bin --steps 10 --seq_len 1024 --device gpu --seed 3 --no_shuffle"
	for a in 1 2; do
		B=$((8 / a))
		cfg $w/ref$a.json 2 $a none 100000000
		timeout 200 $Z train --config $w/ref$a.json $common --per_device_train_batch_size $B > $out/ref$a.log 2>&1 || { echo "reference accum $a failed"; tail -5 $out/ref$a.log; }
		losses $out/ref$a.log > $w/ref$a.txt
		for d in cpu nvme; do
			[ $a = 2 ] && [ $d = cpu ] && continue
			cfg $w/p$d$a.json 3 $a $d 100000000
			timeout 200 $Z train --config $w/p$d$a.json $common --per_device_train_batch_size $B > $out/p$d$a.log 2>&1 || { echo "offload_param $d accum $a failed"; tail -8 $out/p$d$a.log; }
			echo "== accumulation $a (B $B): step, loss, grad norm: stage 2 reference | stage 3 + offload_param $d"
			losses $out/p$d$a.log | paste $w/ref$a.txt -
			grep -E "tok/s" $out/ref$a.log | tail -1; grep -E "tok/s|memory:" $out/p$d$a.log | tail -2
		done
	done
	;;
ranks)
	G=${GPUS:-2}; PB=$((8 / G))
	common="--model gpt2-124m --data $w/c.bin --steps 10 --seq_len 1024 --device gpu --seed 3 --no_shuffle"
	cfg $w/ref1.json 2 1 none 100000000
	timeout 200 $Z train --config $w/ref1.json $common --per_device_train_batch_size 8 > $out/ref1.log 2>&1 || { echo "reference failed"; tail -5 $out/ref1.log; }
	losses $out/ref1.log > $w/ref1.txt
	for d in ${DEVS:-none cpu nvme}; do
		cfg $w/r$d.json 3 1 $d 100000000
		timeout 300 $Z train --num_gpus $G --config $w/r$d.json $common --per_device_train_batch_size $PB > $out/r$d.log 2>&1 || { echo "$G GPUs offload_param $d failed"; tail -12 $out/r$d.log; }
		echo "== $G GPUs, stage 3, offload_param $d: step, loss, grad norm: 1 GPU B 8 | rank 0 (B $PB, its own rows)"
		grep "^\[rank 0\] " $out/r$d.log | sed 's/^\[rank 0\] //' > $w/r0.log
		losses $w/r0.log | paste $w/ref1.txt -
		grep -E "tok/s" $out/ref1.log | tail -1; grep -E "done:|memory:" $out/r$d.log
	done
	;;
ckpt)
	G=${GPUS:-2}
	common="--model gpt2-124m --data $w/c.bin --steps 6 --seq_len 1024 --device gpu --seed 3 --no_shuffle"
	for run in "1 nvme 8" "$G cpu $((8 / G))"; do
		set -- $run; n=$1 d=$2 b=$3
		cfg $w/k$d.json 3 1 $d 100000000
		launch=""; [ $n -gt 1 ] && launch="--num_gpus $n"
		rm -rf $w/ck$d
		timeout 200 $Z train $launch --config $w/k$d.json $common --per_device_train_batch_size $b --out $w/ck$d --save_steps 3 > $out/ck_a$d.log 2>&1 || { echo "$n GPU(s) $d: first run failed"; tail -8 $out/ck_a$d.log; }
		rm -rf $w/ck${d}_b; cp -r $w/ck$d $w/ck${d}_b; rm -rf $w/ck${d}_b/global_step6; echo global_step3 > $w/ck${d}_b/latest
		timeout 200 $Z train $launch --config $w/k$d.json $common --per_device_train_batch_size $b --resume $w/ck${d}_b > $out/ck_b$d.log 2>&1 || { echo "$n GPU(s) $d: resumed run failed"; tail -8 $out/ck_b$d.log; }
		echo "== $n GPU(s), stage 3, offload_param $d: step, loss, grad norm: uninterrupted | resumed at step 3"
		sed 's/^\[rank 0\] //' $out/ck_a$d.log | grep -v "^\[rank" > $w/a.log; sed 's/^\[rank 0\] //' $out/ck_b$d.log | grep -v "^\[rank" > $w/b.log
		losses $w/a.log | tail -3 > $w/a.txt; losses $w/b.log | paste $w/a.txt -
		grep -E "resumed at" $w/b.log
		$Z ckpt consolidate $w/ck$d --out $w/ck$d.st/model.safetensors > $out/ck_c$d.log 2>&1 && echo "consolidated: $(ls -la $w/ck$d.st/model.safetensors | awk '{print $5}') bytes" || { echo "consolidate failed"; tail -3 $out/ck_c$d.log; }
	done
	;;
budget)
	common="--model gpt2-1.5b --data $w/c.bin --steps 6 --seq_len 1024 --per_device_train_batch_size ${BB:-1} --device gpu --gradient_checkpointing"
	cfg $w/b_ref.json 2 1 none 10000000
	echo "== GPT-2 1.5B, no budget, stage 2 + optimizer on pinned host"
	timeout 300 $Z train --config $w/b_ref.json $common > $out/b_ref.log 2>&1 || { echo failed; tail -5 $out/b_ref.log; }
	grep -E "^step|done:|memory:" $out/b_ref.log | tail -4
	echo "== same, --gpu_mem 2G without parameter offload (must be refused)"
	cfg $w/b_s3.json 3 1 none 10000000
	timeout 300 $Z train --config $w/b_s3.json $common --gpu_mem 2G > $out/b_s3.log 2>&1; echo "rc $?"; tail -2 $out/b_s3.log
	for mic in 0 1000000000; do
		budget_run b_nvme$mic 5 $mic
	done
	fio=${FIO:-$PWD/.tools/fio/fio}
	if [ -x "$fio" ]; then
		for rw in write read; do
			echo "== fio $rw, 1 MiB, QD 32, io_uring, O_DIRECT, 4 GiB (the physical bound's bandwidth)"
			"$fio" --name=b --directory=$w/nvme --rw=$rw --bs=1M --iodepth=32 --size=4G --direct=1 \
				--ioengine=io_uring --numjobs=1 --group_reporting 2>&1 | grep -E "^ +(READ|WRITE):"
		done
		rm -f $w/nvme/b.*
	fi
	;;
bufs)
	# the budget run (max_in_cpu 0) at each offload_param.buffer_count in BCS; the aio queue
	# depth QD as above. Prints the per-step time split and the NVMe bytes.
	common="--model gpt2-1.5b --data $w/c.bin --steps 6 --seq_len 1024 --per_device_train_batch_size ${BB:-1} --device gpu --gradient_checkpointing"
	for bc in ${BCS:-5 16}; do
		budget_run bc$bc $bc 0
	done
	;;
esac
done
rm -rf $w/nvme/zinf-*
