package example;

import java.time.Duration;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.functions.RichMapFunction;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.connector.source.util.ratelimit.RateLimiterStrategy;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.RestartStrategyOptions;
import org.apache.flink.connector.datagen.source.DataGeneratorSource;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;
import org.apache.flink.util.ParameterTool;

/**
 * The example job that jobctl's integration tests (and demos) run on a real Flink session cluster.
 *
 * <pre>
 *   --mode unbounded  (default) runs until stopped, ~--rate records/s, keyed state, checkpoints
 *   --mode bounded --records N  processes N records, then the job ends FINISHED
 *   --mode failing --restarts K  fails on purpose; Flink restarts it K times, then the job ends FAILED
 * </pre>
 */
public class Job {
    static final String FAILURE_MESSAGE = "example job failing on purpose";

    public static void main(String[] args) throws Exception {
        ParameterTool params = ParameterTool.fromArgs(args);
        String mode = params.get("mode", "unbounded");
        int restarts = params.getInt("restarts", 2);
        // The failing task lives this long before throwing, so Flink's lazily fetched job metrics
        // (numRestarts) get a chance to see the last restart before the job ends FAILED.
        long failAfterMs = params.getLong("fail-after-ms", 2000);

        Configuration conf = new Configuration();
        if (mode.equals("failing")) {
            // Set from within the job (job-level config wins over the cluster default, which with
            // checkpointing on is "restart forever"): exactly K restarts, then FAILED.
            conf.set(RestartStrategyOptions.RESTART_STRATEGY, "fixed-delay");
            conf.set(RestartStrategyOptions.RESTART_STRATEGY_FIXED_DELAY_ATTEMPTS, restarts);
            conf.set(RestartStrategyOptions.RESTART_STRATEGY_FIXED_DELAY_DELAY, Duration.ofMillis(500));
        }
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment(conf);
        env.enableCheckpointing(params.getLong("checkpoint-interval-ms", 2000));

        // A FLIP-27 source (DataGeneratorSource ships inside flink-dist): it supports stop-with-savepoint
        // with and without drain, and its split position is part of the savepoint. Unbounded and failing
        // jobs are rate-limited so that 30+ copies on a 2-core machine stay cheap; a bounded job runs flat out.
        long count = mode.equals("bounded") ? params.getLong("records", 1000) : Long.MAX_VALUE;
        RateLimiterStrategy rate = mode.equals("bounded")
                ? RateLimiterStrategy.noOp()
                : RateLimiterStrategy.perSecond(params.getDouble("rate", 20));
        DataGeneratorSource<Long> source = new DataGeneratorSource<>(i -> i, count, rate, Types.LONG);

        // Stable uids so that a savepoint maps back onto the same operators on restore.
        env.fromSource(source, WatermarkStrategy.noWatermarks(), "sequence").uid("sequence")
                .keyBy(v -> v % 8)
                .map(new CountPerKey(mode.equals("failing"), failAfterMs)).uid("count-per-key")
                .sinkTo(new DiscardingSink<>()).uid("discard");

        env.execute("jobctl-example-" + mode);
    }

    /** Keyed ValueState (records seen per key) so that a savepoint carries real state to restore. */
    static class CountPerKey extends RichMapFunction<Long, Long> {
        private final boolean failing;
        private final long failAfterMs;
        private transient ValueState<Long> seen;
        private transient long openedAt;

        CountPerKey(boolean failing, long failAfterMs) {
            this.failing = failing;
            this.failAfterMs = failAfterMs;
        }

        @Override
        public void open(OpenContext ctx) {
            seen = getRuntimeContext().getState(new ValueStateDescriptor<>("seen", Types.LONG));
            openedAt = System.currentTimeMillis();
        }

        @Override
        public Long map(Long value) throws Exception {
            if (failing && System.currentTimeMillis() - openedAt >= failAfterMs) {
                throw new RuntimeException(FAILURE_MESSAGE + " (attempt "
                        + getRuntimeContext().getTaskInfo().getAttemptNumber() + ")");
            }
            long n = seen.value() == null ? 1 : seen.value() + 1;
            seen.update(n);
            return n;
        }
    }
}
