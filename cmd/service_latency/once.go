package main

import (
	"io"
	"sync"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/agent"
	"github.com/influxdata/telegraf/plugins/serializers/influx"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency"
)

// gatherOnce runs one gather, writes its metrics as line protocol to w
// and stops the plugin (saving its state).
func gatherOnce(p *service_latency.ServiceLatency, w io.Writer, log telegraf.Logger) int {
	defer p.Stop()
	ser := &influx.Serializer{SortFields: true}
	if err := ser.Init(); err != nil {
		log.Errorf("%v", err)
		return 1
	}
	ch := make(chan telegraf.Metric, 64)
	var wg sync.WaitGroup
	var writeErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for m := range ch {
			b, err := ser.Serialize(m)
			if err == nil {
				_, err = w.Write(b)
			}
			if err != nil && writeErr == nil {
				writeErr = err
			}
		}
	}()
	acc := agent.NewAccumulator(maker{log}, ch)
	acc.SetPrecision(time.Nanosecond)
	err := p.Gather(acc)
	close(ch)
	wg.Wait()
	if err != nil {
		log.Errorf("gather: %v", err)
		return 1
	}
	if writeErr != nil {
		log.Errorf("writing metrics: %v", writeErr)
		return 1
	}
	return 0
}

type maker struct{ log telegraf.Logger }

func (maker) LogName() string                              { return "service_latency" }
func (maker) MakeMetric(m telegraf.Metric) telegraf.Metric { return m }
func (m maker) Log() telegraf.Logger                       { return m.log }
