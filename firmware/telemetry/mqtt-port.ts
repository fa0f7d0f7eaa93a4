/**
 * The MQTT edge as a port (types only). The fleet agent (fleet-agent.ts) drives one connection at
 * a time through it and owns everything MQTT.js would otherwise decide for us: which broker next,
 * when to retry (own jittered backoff), when a silent connection is dead (own watchdog on every
 * packet received, at 1.5 × keep-alive), what to resend (own outbox in flash). The platform edge
 * (firmware/platform/mqtt-connection.ts) implements it over MQTT.js v5 with its reconnect, offline
 * queue, topic aliases and resubscribe switched off, so none of that can surprise us.
 */

export interface MqttWill {
  topic: string;
  payload: string;
  qos: 0 | 1;
  retain: boolean;
}

/** How a client proves itself to a broker and checks the broker (one shape for phone and CLI). */
export interface MqttCredentials {
  username?: string;
  password?: string;
  /** PEM texts: the CA(s) the broker's certificate must chain to (mqtts only). */
  ca?: string[];
  /** PEM texts: a client certificate and its key (mqtts only). */
  cert?: string;
  key?: string;
  /** The broker's name for certificate checks when the URL holds an address. */
  servername?: string;
}

export interface MqttConnectOptions extends MqttCredentials {
  /** mqtt://host:port or mqtts://host:port (one member of the broker list). */
  url: string;
  clientId: string;
  /** Seconds; sent in CONNECT; the edge pings through `timer`, the agent watches the replies. */
  keepaliveS: number;
  /** Give up on a CONNECT without CONNACK after this long. */
  connectTimeoutMs: number;
  will: MqttWill;
  /** MQTT v5 session expiry; 0 = the session ends with the connection. */
  sessionExpiryS: number;
  /**
   * setInterval/clearInterval on the phone's clock, for the edge's keep-alive pings (so that a
   * fake clock drives them in tests, and the OS clock never does).
   */
  timer: { set(fn: () => void, ms: number): number; clear(id: number): void };
}

export interface MqttPublishOptions {
  qos: 0 | 1;
  retain?: boolean;
  /** MQTT v5 properties used by the agent. */
  responseTopic?: string;
  correlationData?: Buffer;
  messageExpiryS?: number;
  contentType?: string;
}

export interface MqttIncoming {
  topic: string;
  payload: Buffer;
  retain: boolean;
  responseTopic?: string;
  correlationData?: Buffer;
}

export interface MqttConnection {
  /** The keep-alive in force, when the edge knows it (a broker's Server Keep Alive overrides ours). */
  readonly keepaliveS?: number;
  /**
   * Resolves when the broker has acknowledged (PUBACK for QoS 1; at write for QoS 0). Rejects
   * with mqtt-publish-refused when the broker refused this message (a PUBACK error: ACL, size),
   * mqtt-offline when the connection is gone.
   */
  publish(topic: string, payload: string, o: MqttPublishOptions): Promise<void>;
  /** Resolves with the granted QoS per filter (128 = refused by the broker). */
  subscribe(filters: string[], qos: 0 | 1): Promise<number[]>;
  /** Each handler is set once per connection (a reconnect is a new connection: nothing stacks). */
  onMessage(handler: (m: MqttIncoming) => void): void;
  /** Any packet at all from the broker (PINGRESP, PUBACK, PUBLISH…): what the watchdog feeds on. */
  onPacket(handler: () => void): void;
  /** Once, whatever the cause (broker closed, socket error, our close()). */
  onClose(handler: (reason: string) => void): void;
  /** A clean DISCONNECT (no will) unless `force`, then the socket is destroyed (the will fires). */
  close(force?: boolean): Promise<void>;
}

export interface MqttPort {
  /**
   * Rejects with a HandsetError: mqtt-refused, mqtt-auth, mqtt-timeout, mqtt-tls, mqtt-unreachable,
   * mqtt-options, or clock-invalid (the broker's certificate cannot be judged before SNTP).
   */
  connect(o: MqttConnectOptions): Promise<MqttConnection>;
}
