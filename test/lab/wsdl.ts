/**
 * Metadata documents the lab pool serves at `<service>/mex` (webticket-certprov.md §2, §9.1–§9.2).
 *
 * Real pools' full WSDL text was not available to us ([MS-OCAUTHWS] §6.1/6.2 unread); what a
 * client may rely on is what sipe proved: the Cert Prov port name, the policy wsu:Id and the path
 * ExactlyOne/All/EndorsingSupportingTokens/Policy/IssuedToken/Issuer/Address, and the web ticket
 * port names. The rest (TransportBinding, the [MS-WSPOL] http:*Authentication assertions, the
 * X509Token policy for /Cert) is standard WCF shape and is SYNTHETIC.
 */
import { escapeXml, NS, URI } from "./soap.ts";

const DECLS =
  `xmlns:wsdl="${NS.wsdl}" xmlns:soap="${NS.wsdlSoap}" xmlns:wsu="${NS.wsu}" xmlns:wsp="${NS.wsp}" ` +
  `xmlns:sp="${NS.sp}" xmlns:wsa10="${NS.wsa}" xmlns:wsaw="${NS.wsaw}" xmlns:wst="${NS.wst}" ` +
  `xmlns:xsd="${NS.xsd}"`;

const TRANSPORT_BINDING =
  `<sp:TransportBinding><wsp:Policy>` +
  `<sp:TransportToken><wsp:Policy><sp:HttpsToken/></wsp:Policy></sp:TransportToken>` +
  `<sp:AlgorithmSuite><wsp:Policy><sp:Basic256/></wsp:Policy></sp:AlgorithmSuite>` +
  `<sp:Layout><wsp:Policy><sp:Strict/></wsp:Policy></sp:Layout>` +
  `<sp:IncludeTimestamp/>` +
  `</wsp:Policy></sp:TransportBinding>`;

function policy(id: string, assertions: string): string {
  return `<wsp:Policy wsu:Id="${id}"><wsp:ExactlyOne><wsp:All>${assertions}</wsp:All></wsp:ExactlyOne></wsp:Policy>`;
}

function binding(name: string, portType: string, op: string, action: string, policyId: string): string {
  return (
    `<wsdl:binding name="${name}" type="tns:${portType}">` +
    `<wsp:PolicyReference URI="#${policyId}"/>` +
    `<soap:binding transport="http://schemas.xmlsoap.org/soap/http"/>` +
    `<wsdl:operation name="${op}"><soap:operation soapAction="${action}" style="document"/>` +
    `<wsdl:input><soap:body use="literal"/></wsdl:input><wsdl:output><soap:body use="literal"/></wsdl:output>` +
    `</wsdl:operation></wsdl:binding>`
  );
}

function port(name: string, location: string): string {
  return `<wsdl:port name="${name}" binding="tns:${name}"><soap:address location="${escapeXml(location)}"/></wsdl:port>`;
}

export const CERTPROV_PORT = "CertProvisioningServiceWebTicketProof_SHA1";
export const CERTPROV_POLICY_ID = "CertProvisioningServiceWebTicketProof_SHA1_policy";

/** The Certificate Provisioning Service WSDL (no XML declaration: it is also embedded in mex). */
export function certProvWsdl(o: { certProvUrl: string; webTicketUrl: string }): string {
  const proofPolicy = policy(
    CERTPROV_POLICY_ID,
    TRANSPORT_BINDING +
      `<sp:EndorsingSupportingTokens><wsp:Policy>` +
      `<sp:IssuedToken sp:IncludeToken="${NS.sp}/IncludeToken/AlwaysToRecipient">` +
      `<sp:Issuer><wsa10:Address>${escapeXml(o.webTicketUrl)}</wsa10:Address></sp:Issuer>` +
      `<sp:RequestSecurityTokenTemplate><wst:TokenType>${URI.samlTokenType}</wst:TokenType>` +
      `<wst:KeyType>${URI.symmetricKey}</wst:KeyType><wst:KeySize>256</wst:KeySize>` +
      `</sp:RequestSecurityTokenTemplate>` +
      `<wsp:Policy><sp:RequireInternalReference/></wsp:Policy>` +
      `</sp:IssuedToken>` +
      `</wsp:Policy></sp:EndorsingSupportingTokens>` +
      `<sp:Wss11><wsp:Policy/></sp:Wss11>` +
      `<wsaw:UsingAddressing/>`,
  );
  return (
    `<wsdl:definitions name="CertProvisioningService" targetNamespace="${NS.tns}" xmlns:tns="${NS.tns}" ${DECLS}>` +
    proofPolicy +
    `<wsdl:message name="GetAndPublishCertRequest"><wsdl:part name="parameters" element="tns:GetAndPublishCert"/></wsdl:message>` +
    `<wsdl:message name="GetAndPublishCertResponse"><wsdl:part name="parameters" element="tns:GetAndPublishCertResponse"/></wsdl:message>` +
    `<wsdl:portType name="ICertProvisioningService"><wsdl:operation name="GetAndPublishCert">` +
    `<wsdl:input wsaw:Action="${URI.getAndPublishCert}" message="tns:GetAndPublishCertRequest"/>` +
    `<wsdl:output wsaw:Action="${URI.getAndPublishCertResponse}" message="tns:GetAndPublishCertResponse"/>` +
    `</wsdl:operation></wsdl:portType>` +
    binding(
      CERTPROV_PORT,
      "ICertProvisioningService",
      "GetAndPublishCert",
      URI.getAndPublishCert,
      CERTPROV_POLICY_ID,
    ) +
    `<wsdl:service name="CertProvisioningService">` +
    port(CERTPROV_PORT, `${o.certProvUrl}/WebTicket_Proof`) +
    `</wsdl:service></wsdl:definitions>`
  );
}

/** The Web Ticket Service WSDL (target namespace http://tempuri.org/). */
export function webTicketWsdl(o: {
  webTicketUrl: string;
  pinUrl?: string | undefined;
  certUrl: string;
}): string {
  const http = (name: string) => `<http:${name} xmlns:http="${NS.httpPolicy}"/>`;
  const policies =
    policy("WebTicketServiceWinNegotiate_policy", http("NegotiateAuthentication") + TRANSPORT_BINDING) +
    (o.pinUrl ? policy("WebTicketServicePin_policy", http("BasicAuthentication") + TRANSPORT_BINDING) : "") +
    policy(
      "WebTicketServiceCert_policy",
      TRANSPORT_BINDING +
        `<sp:EndorsingSupportingTokens><wsp:Policy>` +
        `<sp:X509Token sp:IncludeToken="${NS.sp}/IncludeToken/AlwaysToRecipient">` +
        `<wsp:Policy><sp:WssX509V3Token10/></wsp:Policy></sp:X509Token>` +
        `</wsp:Policy></sp:EndorsingSupportingTokens>` +
        `<sp:Wss10><wsp:Policy><sp:MustSupportRefKeyIdentifier/></wsp:Policy></sp:Wss10>`,
    );
  const op = "IssueToken";
  const pt = "IWebTicketService";
  const bindings =
    binding(
      "WebTicketServiceWinNegotiate",
      pt,
      op,
      URI.rstIssueAction,
      "WebTicketServiceWinNegotiate_policy",
    ) +
    (o.pinUrl
      ? binding("WebTicketServicePin", pt, op, URI.rstIssueAction, "WebTicketServicePin_policy")
      : "") +
    binding("WebTicketServiceCert", pt, op, URI.rstIssueAction, "WebTicketServiceCert_policy");
  const ports =
    port("WebTicketServiceWinNegotiate", o.webTicketUrl) +
    (o.pinUrl ? port("WebTicketServicePin", o.pinUrl) : "") +
    port("WebTicketServiceCert", o.certUrl);
  return (
    `<wsdl:definitions name="WebTicketService" targetNamespace="http://tempuri.org/" xmlns:tns="http://tempuri.org/" ${DECLS}>` +
    policies +
    `<wsdl:message name="IWebTicketService_IssueToken_InputMessage"><wsdl:part name="message" element="wst:RequestSecurityToken"/></wsdl:message>` +
    `<wsdl:message name="IWebTicketService_IssueToken_OutputMessage"><wsdl:part name="IssueTokenResult" element="wst:RequestSecurityTokenResponseCollection"/></wsdl:message>` +
    `<wsdl:portType name="${pt}"><wsdl:operation name="${op}">` +
    `<wsdl:input wsaw:Action="${URI.rstIssueAction}" message="tns:IWebTicketService_IssueToken_InputMessage"/>` +
    `<wsdl:output wsaw:Action="${URI.rstrcIssueFinal}" message="tns:IWebTicketService_IssueToken_OutputMessage"/>` +
    `</wsdl:operation></wsdl:portType>` +
    bindings +
    `<wsdl:service name="WebTicketService">${ports}</wsdl:service></wsdl:definitions>`
  );
}

/** The WS-Transfer GetResponse for a mex POST: SOAP 1.2, wsx:Metadata/MetadataSection/definitions. */
export function mexResponse(wsdl: string, targetNamespace: string, relatesTo?: string): string {
  return (
    `<s:Envelope xmlns:s="${NS.soap12}" xmlns:a="${NS.wsa}"><s:Header>` +
    `<a:Action s:mustUnderstand="1">${URI.transferGetResponse}</a:Action>` +
    (relatesTo ? `<a:RelatesTo>${escapeXml(relatesTo)}</a:RelatesTo>` : "") +
    `</s:Header><s:Body><wsx:Metadata xmlns:wsx="${NS.wsx}">` +
    `<wsx:MetadataSection Dialect="${URI.wsdlDialect}" Identifier="${targetNamespace}">${wsdl}</wsx:MetadataSection>` +
    `</wsx:Metadata></s:Body></s:Envelope>`
  );
}
