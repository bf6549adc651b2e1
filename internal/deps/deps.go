package deps
import (
 _ "github.com/miekg/dns"
 _ "github.com/redis/go-redis/v9"
 _ "github.com/DataDog/sketches-go/ddsketch"
 _ "go.uber.org/goleak"
 _ "github.com/influxdata/toml"
 _ "github.com/stretchr/testify/require"
)
